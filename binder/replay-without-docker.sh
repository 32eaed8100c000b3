#!/bin/bash
# Replays, without Docker, the steps of the Dockerfile that repo2docker generates for this repository, to check
# binder/ on a machine with no Docker daemon (docs/CLASSROOM.md, "Checked without Docker").
#   1. repo2docker --no-build --no-run --debug prints that Dockerfile (when jupyter-repo2docker is installed);
#   2. a fresh Python 3.11 venv stands in for its conda env; the repository is cloned where the image puts it ($HOME);
#   3. its two build steps run as written: pip install -r binder/requirements.txt, then binder/postBuild;
#   4. binder/start runs before JupyterLab, which must serve the copied course with notebook 00 in it.
# Usage: bash binder/replay-without-docker.sh [WORKDIR]   (from a clone; about 15 min, most of it pip)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-$(mktemp -d /tmp/sdedu-r2d.XXXX)}"
mkdir -p "$work"
if command -v repo2docker >/dev/null 2>&1; then
  (cd "$repo" && repo2docker --no-build --no-run --debug --user-id 1000 --user-name jovyan .) > "$work/Dockerfile.log" 2>&1
  grep -q 'pip install --no-cache-dir -r "binder/requirements.txt"' "$work/Dockerfile.log"
  grep -q './binder/postBuild' "$work/Dockerfile.log"
  grep -q 'R2D_ENTRYPOINT="${REPO_DIR}/binder/start"' "$work/Dockerfile.log"
  echo "repo2docker's Dockerfile: $work/Dockerfile.log (requirements, postBuild, start found)"
fi
python3.11 -m venv "$work/env"
export PATH="$work/env/bin:$PATH"
git clone -q "$repo" "$work/home"
cd "$work/home"
export HOME="$work/home"
time pip install --no-cache-dir -r binder/requirements.txt
time ./binder/postBuild
port=18889
./binder/start jupyter lab --no-browser --port $port --IdentityProvider.token=replay --allow-root > "$work/lab.log" 2>&1 &
lab=$!
trap 'kill $lab 2>/dev/null || true' EXIT
for _ in $(seq 60); do curl -sf "http://127.0.0.1:$port/api/status?token=replay" >/dev/null && break; sleep 2; done
curl -sf "http://127.0.0.1:$port/api/contents/notebooks/00_start_here.ipynb?token=replay&content=0" | grep -q '"type": "notebook"'
grep "Serving notebooks from local directory" "$work/lab.log"
echo "binder/ replayed: JupyterLab serves the course copied by binder/start, notebook 00 included"
