#!/usr/bin/env bash
# chatcompat's benchmark in one command: the mock upstream, the load directly against
# it and through `chatcompat serve` (2 gevent workers, openai backend), the slow-stream
# capacity run, one table. Arguments go to bench/run.py (--duration, --no-capacity,
# --streams, --json FILE). Takes about 4 minutes; run it on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-}
if [[ -z "$python" ]]; then
  if [[ -x .venv/bin/python ]]; then python=$PWD/.venv/bin/python; else python=python3; fi
fi
# From outside the checkout: the gateway the bench starts does not run in it.
if ! (cd / && "$python" -c 'import chatcompat') 2>/dev/null; then
  echo "bench: $python cannot import chatcompat; install it first (README, Benchmarks)," >&2
  echo "       or point PYTHON at the interpreter that has it." >&2
  exit 2
fi
exec "$python" bench/run.py "$@"
