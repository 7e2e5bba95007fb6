#!/bin/bash
# A two-node Ray cluster on this machine whose second node shares no disk with the driver (its own mount
# namespace, the results folder an empty tmpfs there), and a 6-run sweep with --executor ray: every run must
# land in the driver's results file. Needs root (unshare, mount), Ray, sqlite3.
#   WORK=/tmp/rt VENV=.venv/bin bash benchmarks/ray_two_nodes.sh
set -x
mkdir -p "${WORK:-/tmp/fedbench-ray-two-nodes}"
export RAY_AUTH_MODE=disabled
R=${WORK:-/tmp/fedbench-ray-two-nodes}
V=${VENV:-$(dirname "$(command -v python)")}
rm -rf $R/res && mkdir -p $R/res
$V/ray stop --force >/dev/null 2>&1
$V/ray start --head --port 6391 --num-cpus 1 --include-dashboard false --disable-usage-stats > $R/head.log 2>&1
# the second node: its own mount namespace, where the driver's results folder is an empty tmpfs (no shared disk)
unshare -m sh -c "mount -t tmpfs tmpfs $R/res && exec $V/ray start --address 127.0.0.1:6391 --num-cpus 1 --block --disable-usage-stats" > $R/node2.log 2>&1 &
sleep 15
$V/python -c "import ray; ray.init(address='127.0.0.1:6391'); print('nodes', len([n for n in ray.nodes() if n['Alive']]))"
cat > $R/s.toml <<'T'
methods = ["fedavg", "fedprox"]
seeds = [1, 2, 3]
[set]
rounds = 6
eval_every = 2
[datasets.synthetic]
n_clients = 8
n_test = 40
dim = 10
T
cd $R && $V/python -m fedbench run --suite $R/s.toml --executor ray --address 127.0.0.1:6391 --results res/r.sqlite --no-progress
echo "exit $?"
sqlite3 $R/res/r.sqlite "select status, count(*) from runs group by status; select count(distinct pid), count(*) from attempts; select count(*) from metrics;"
$V/python -c "
import ray; ray.init(address='127.0.0.1:6391')
print(sorted(n['NodeManagerAddress']+':'+str(n['Resources'].get('CPU')) for n in ray.nodes() if n['Alive']))"
$V/ray stop --force >/dev/null 2>&1
