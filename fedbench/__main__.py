from fedbench.cli import main

raise SystemExit(main())
