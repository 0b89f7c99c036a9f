#!/bin/sh
# The install and run steps of the Dockerfile, kept here so that tests/deploy runs the very same steps
# in a clean virtual environment on a machine without Docker.
#
#   docker-steps.sh build SRC DIST     build potluck's wheel and sdist from the source tree SRC into DIST
#   docker-steps.sh install DIST VENV  make the virtual environment VENV, install DIST's wheel with the hub
#                                      extra, and link it as DIST/agent.whl for --agent-wheel
#   docker-steps.sh user NAME HOME     add the unprivileged user the image runs as, with HOME as its data
#   docker-steps.sh health             exit 0 when the hub in this container answers /healthz
#
# pip reads PIP_* variables (PIP_NO_INDEX, PIP_FIND_LINKS) as usual: that is how the test builds offline.
set -eu

die() {
	printf 'docker-steps: %s\n' "$*" >&2
	exit 1
}

python=${PYTHON:-python3}

case ${1:-} in
build)
	[ "$#" -eq 3 ] || die "usage: build SRC DIST"
	"$python" -m pip install --quiet --disable-pip-version-check 'build>=1.2'
	"$python" -m build --sdist --wheel --outdir "$3" "$2"
	;;
install)
	[ "$#" -eq 3 ] || die "usage: install DIST VENV"
	set -- "$2" "$3" "$2"/potluck-*-py3-none-any.whl
	if [ "$#" -ne 3 ] || [ ! -f "$3" ]; then
		die "expected exactly one potluck wheel in $1"
	fi
	"$python" -m venv "$2"
	"$2/bin/python" -m pip install --quiet --disable-pip-version-check --no-compile "potluck[hub,cluster] @ file://$(cd "$(dirname "$3")" && pwd)/$(basename "$3")"
	ln -sf "$(basename "$3")" "$1/agent.whl"  # what the hub serves at /download/ (--agent-wheel)
	"$2/bin/potluck" --version
	;;
user)
	[ "$#" -eq 3 ] || die "usage: user NAME HOME"
	groupadd --system --gid 10001 "$2"
	useradd --system --uid 10001 --gid 10001 --create-home --home-dir "$3" --shell /usr/sbin/nologin "$2"
	chmod 700 "$3"
	;;
health)
	port=${POTLUCK_HUB_PORT:-8642}
	scheme=http
	[ -z "${POTLUCK_HUB_TLS_CERT:-}" ] || scheme=https
	exec "$python" - "$scheme://127.0.0.1:$port/healthz" <<'PY'
import ssl
import sys
import urllib.request

context = ssl.create_default_context()
context.check_hostname = False  # the certificate names the public host, not 127.0.0.1
context.verify_mode = ssl.CERT_NONE
with urllib.request.urlopen(sys.argv[1], timeout=3, context=context) as response:
    sys.exit(0 if response.status == 200 else 1)
PY
	;;
*)
	die "usage: docker-steps.sh build SRC DIST | install DIST VENV | user NAME HOME | health"
	;;
esac
