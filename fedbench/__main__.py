from fedbench.cli import entry

entry()
