# Shared by bench/run.sh and bench/peers.sh (sourced).

# pin_cpus ENABLED PROXIES: the proxies under test on the last CPU, the mock upstream and the
# load generators on the first, so that neither side takes CPU from the other. Sets LOAD_CPU and
# PROXY_CPU, the command prefixes ON_LOAD and ON_PROXY (empty arrays when not pinned), PROXY_CPUS
# (how many CPUs the proxies may use) and PINNING (a line for the results, naming PROXIES).
# Pins only when ENABLED is not 0, taskset exists and there are two CPUs or more.
pin_cpus() {
  local enabled=$1 proxies=$2 cpus
  cpus="$(python3 -c 'import os; print(" ".join(map(str, sorted(os.sched_getaffinity(0)))))')"
  local -a cpu_list
  read -r -a cpu_list <<<"$cpus"
  if [ "$enabled" != 0 ] && command -v taskset >/dev/null && [ "${#cpu_list[@]}" -ge 2 ]; then
    LOAD_CPU="${cpu_list[0]}"
    PROXY_CPU="${cpu_list[${#cpu_list[@]}-1]}"
    ON_LOAD=(taskset -c "$LOAD_CPU")
    ON_PROXY=(taskset -c "$PROXY_CPU")
    PROXY_CPUS=1
    PINNING="yes: $proxies on CPU $PROXY_CPU; mock upstream, oha, wrk and bench-client on CPU $LOAD_CPU"
  else
    ON_LOAD=()
    ON_PROXY=()
    PROXY_CPUS="${#cpu_list[@]}"
    PINNING="no (every process on every CPU)"
  fi
}

# stop_processes TARGET...: SIGTERM to each target (a pid, or -PGID for a whole process group),
# up to 5 s for each to leave, then SIGKILL to whatever stayed.
stop_processes() {
  local target
  for target in "$@"; do
    kill -TERM -- "$target" 2>/dev/null || true
  done
  for target in "$@"; do
    for _ in $(seq 50); do kill -0 -- "$target" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "$target" 2>/dev/null || true
  done
}
