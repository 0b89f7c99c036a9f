#!/bin/sh
# Potluck agent installer, served by a Potluck hub at /install.sh:
#
#     curl -fsSL https://HUB/install.sh | sh -s -- --token pat-...
#
# It downloads the hub's own agent wheel, checks its SHA-256, installs it with the agent's dependencies
# into an isolated environment under a prefix (uv when present, else python3 -m venv), keeps the
# enrolment token in a file only its owner can read, and runs the agent as a user service (systemd on
# Linux, launchd on macOS) or, with --no-service, in the foreground. Running it again upgrades in place.
# The hub fills in SERVED_HUB and WHEEL when it serves this file.
set -eu

SERVED_HUB='@@HUB_URL@@'
WHEEL='@@WHEEL@@'

say() { printf 'potluck install: %s\n' "$*" >&2; }
die() {
	say "$*"
	exit 1
}

usage() {
	cat <<'EOF'
Usage: sh install.sh [--token pat-...] [--hub URL] [--name NAME] [--prefix DIR] [--no-service]
                     [--allow-insecure]

  --token TOKEN  the one-time enrolment token (pat-...); kept in PREFIX/token with mode 0600.
                 Needed on the first install; later runs keep the file unless given a new one.
  --hub URL      the hub to join (default: the hub this script was downloaded from).
  --name NAME    the agent's name in the hub's lists (default: the token's name).
  --prefix DIR   where the agent's environment, token and key live
                 (default: $XDG_DATA_HOME/potluck-agent, or ~/.local/share/potluck-agent).
  --no-service   run the agent in the foreground instead of as a user service.
  --allow-insecure
                 let the agent reach a hub on another machine over plain http:// (a trusted LAN only).

Environment: POTLUCK_INSTALL_PIP_ARGS, extra arguments for pip or uv (a mirror, or --no-index
--find-links DIR for an offline install).
EOF
}

hub=$SERVED_HUB
token=
name=
prefix=${XDG_DATA_HOME:-$HOME/.local/share}/potluck-agent
service=1
insecure=0

while [ "$#" -gt 0 ]; do
	case $1 in
	--token | --hub | --name | --prefix)
		[ "$#" -ge 2 ] || die "$1 needs a value"
		case $1 in
		--token) token=$2 ;;
		--hub) hub=$2 ;;
		--name) name=$2 ;;
		--prefix) prefix=$2 ;;
		esac
		shift 2
		;;
	--token=*) token=${1#*=} && shift ;;
	--hub=*) hub=${1#*=} && shift ;;
	--name=*) name=${1#*=} && shift ;;
	--prefix=*) prefix=${1#*=} && shift ;;
	--no-service) service=0 && shift ;;
	--allow-insecure) insecure=1 && shift ;;
	-h | --help)
		usage
		exit 0
		;;
	*)
		usage >&2
		die "unknown option: $1"
		;;
	esac
done

# Everything below ends up in a unit file, a plist or an environment file: only plain characters.
case $WHEEL in
*@@*) die "this is the unfilled template: download the script from your hub (https://HUB/install.sh)" ;;
esac
hub=${hub%/}
case $hub in
http://?* | https://?*) ;;
*) die "--hub must be an http:// or https:// URL, not '$hub'" ;;
esac
case $hub in
*[!][A-Za-z0-9.:/_~-]*) die "--hub has characters a URL of a hub does not need: '$hub'" ;;
esac
case $hub in
http://127.* | http://localhost | http://localhost[:/]* | http://\[::1\]*) ;;
http://*) [ "$insecure" = 1 ] || die "the agent reaches a hub on another machine over https:// (or --allow-insecure), not $hub" ;;
esac
case $token in
*[!A-Za-z0-9_.-]*) die "--token is not an enrolment token (pat-...)" ;;
esac
case $name in
*[!A-Za-z0-9._@+\ -]*) die "--name may use letters, digits, spaces and . _ @ + - only" ;;
esac
case $prefix in
/*) ;;
*) prefix=$(pwd)/$prefix ;;
esac
case $prefix in
*[!A-Za-z0-9._/@+-]*) die "--prefix may use letters, digits and . _ / @ + - only: '$prefix'" ;;
esac

venv=$prefix/venv
token_file=$prefix/token
env_file=$prefix/agent.env
if [ -z "$token" ] && [ ! -s "$token_file" ]; then
	die "--token is needed on the first install (make one on the hub: Add a GPU, or potluck agent-token create NAME)"
fi

mkdir -p "$prefix"
chmod 700 "$prefix"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/potluck-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

fetch() {
	if command -v curl >/dev/null 2>&1; then
		curl -fsSL --proto '=https,http' -o "$2" "$1" || die "cannot download $1"
	elif command -v wget >/dev/null 2>&1; then
		wget -q -O "$2" "$1" || die "cannot download $1"
	else
		die "need curl or wget to download the agent"
	fi
}

sha256_of() {
	if command -v sha256sum >/dev/null 2>&1; then
		sha256sum "$1" | cut -d ' ' -f 1
	elif command -v shasum >/dev/null 2>&1; then
		shasum -a 256 "$1" | cut -d ' ' -f 1
	else
		die "need sha256sum or shasum to check the download"
	fi
}

say "downloading $WHEEL from $hub"
fetch "$hub/download/$WHEEL" "$tmp/$WHEEL"
fetch "$hub/download/$WHEEL.sha256" "$tmp/$WHEEL.sha256"
expected=$(cut -d ' ' -f 1 <"$tmp/$WHEEL.sha256")
actual=$(sha256_of "$tmp/$WHEEL")
if [ -z "$expected" ] || [ "$expected" != "$actual" ]; then
	die "$WHEEL: SHA-256 $actual, but the hub says ${expected:-nothing}"
fi

find_python() {
	for candidate in python3.13 python3.12 python3.11 python3; do
		if command -v "$candidate" >/dev/null 2>&1 &&
			"$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
			command -v "$candidate"
			return 0
		fi
	done
	return 1
}

# Word splitting is the point: the variable holds several pip arguments.
# shellcheck disable=SC2086
if command -v uv >/dev/null 2>&1; then
	say "installing into $venv with uv"
	[ -x "$venv/bin/python" ] || uv venv --quiet --python '>=3.11' "$venv"
	uv pip install --quiet --python "$venv/bin/python" ${POTLUCK_INSTALL_PIP_ARGS:-} \
		--reinstall-package potluck "$tmp/$WHEEL"
else
	if [ ! -x "$venv/bin/python" ]; then
		python=$(find_python) || die "need Python 3.11 or newer (or uv: https://docs.astral.sh/uv/)"
		say "creating $venv with $python"
		"$python" -m venv "$venv" || die "python -m venv failed (on Debian or Ubuntu: apt install python3-venv)"
	fi
	say "installing into $venv with pip"
	# The wheel first, alone, so that a rebuilt wheel of the same version replaces the old files; then its
	# dependencies, resolved from the metadata just installed.
	"$venv/bin/python" -m pip install --quiet --disable-pip-version-check ${POTLUCK_INSTALL_PIP_ARGS:-} \
		--no-deps --force-reinstall "$tmp/$WHEEL"
	"$venv/bin/python" -m pip install --quiet --disable-pip-version-check ${POTLUCK_INSTALL_PIP_ARGS:-} \
		"$tmp/$WHEEL"
fi

# The token goes through printf, a shell builtin: it is never on a process's command line.
if [ -n "$token" ]; then
	(
		umask 077
		printf '%s\n' "$token" >"$token_file.new"
	)
	mv -f "$token_file.new" "$token_file"
fi
chmod 600 "$token_file"

(
	umask 077
	{
		printf 'POTLUCK_AGENT_HUB="%s"\n' "$hub"
		printf 'POTLUCK_AGENT_TOKEN_FILE="%s"\n' "$token_file"
		printf 'POTLUCK_AGENT_DATA_DIR="%s"\n' "$prefix/data"
		[ -z "$name" ] || printf 'POTLUCK_AGENT_NAME="%s"\n' "$name"
		[ "$insecure" = 0 ] || printf 'POTLUCK_AGENT_ALLOW_INSECURE="true"\n'
	} >"$env_file"
)
say "installed $("$venv/bin/potluck" --version)"

if [ "$service" = 0 ]; then
	rm -rf "$tmp"
	trap - EXIT
	say "running the agent in the foreground (Ctrl-C stops it)"
	set -a
	# shellcheck source=/dev/null
	. "$env_file"
	set +a
	exec "$venv/bin/potluck" agent
fi

case $(uname -s) in
Linux)
	if ! command -v systemctl >/dev/null 2>&1 || ! systemctl --user show-environment >/dev/null 2>&1; then
		die "no systemd user session here: rerun with --no-service, or run it under a login session"
	fi
	unit_dir=${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user
	mkdir -p "$unit_dir"
	cat >"$unit_dir/potluck-agent.service" <<EOF
# Written by the Potluck install script; running the script again rewrites it.
[Unit]
Description=Potluck agent for $hub
After=network-online.target
Wants=network-online.target

[Service]
EnvironmentFile=$env_file
ExecStart=$venv/bin/potluck agent
Restart=on-failure
RestartSec=5
# Exit status 2: refused by the hub for good (or a bad option); restarting would not help.
RestartPreventExitStatus=2
# SIGTERM drains in-flight requests for up to --drain-timeout (30 s).
TimeoutStopSec=45

[Install]
WantedBy=default.target
EOF
	systemctl --user daemon-reload
	systemctl --user enable potluck-agent.service >/dev/null 2>&1
	systemctl --user restart potluck-agent.service
	say "the agent runs as the systemd user service potluck-agent (journalctl --user -u potluck-agent -f)"
	say "to keep it running while you are logged out: loginctl enable-linger $(id -un)"
	;;
Darwin)
	label=org.potluck.agent
	plist=$HOME/Library/LaunchAgents/$label.plist
	mkdir -p "$HOME/Library/LaunchAgents"
	{
		cat <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>Label</key><string>$label</string>
  <key>ProgramArguments</key>
  <array><string>$venv/bin/potluck</string><string>agent</string></array>
  <key>EnvironmentVariables</key>
  <dict>
    <key>POTLUCK_AGENT_HUB</key><string>$hub</string>
    <key>POTLUCK_AGENT_TOKEN_FILE</key><string>$token_file</string>
    <key>POTLUCK_AGENT_DATA_DIR</key><string>$prefix/data</string>
EOF
		[ -z "$name" ] || printf '    <key>POTLUCK_AGENT_NAME</key><string>%s</string>\n' "$name"
		[ "$insecure" = 0 ] || printf '    <key>POTLUCK_AGENT_ALLOW_INSECURE</key><string>true</string>\n'
		cat <<EOF
  </dict>
  <key>RunAtLoad</key><true/>
  <key>KeepAlive</key><dict><key>SuccessfulExit</key><false/></dict>
  <key>StandardErrorPath</key><string>$prefix/agent.log</string>
</dict>
</plist>
EOF
	} >"$plist"
	launchctl bootout "gui/$(id -u)/$label" >/dev/null 2>&1 || true
	launchctl bootstrap "gui/$(id -u)" "$plist"
	say "the agent runs as the launchd agent $label (log: $prefix/agent.log)"
	;;
*)
	die "no user service manager known on $(uname -s): rerun with --no-service"
	;;
esac
