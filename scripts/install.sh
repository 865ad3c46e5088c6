#!/usr/bin/env bash
# Installs everything the bot, its tests and the demo need; safe to run again (each step is skipped when done).
#   .venv/               the project and its test tools (editable install)
#   .cache/synapse-venv  Synapse from PyPI (+ psycopg2-binary), in a virtualenv of its own
#   system packages      PostgreSQL server binaries, Node.js and Chromium (apt), when missing
#   tests/harness/oidc_provider/node_modules  node-oidc-provider for the OpenID tests (npm ci)
#   tests/harness/js_client/node_modules      matrix-js-sdk + Rust crypto for the E2EE tests (npm ci)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
quiet_pip() { grep -v "is ignored: it is neither a file nor a directory" || true; }

need_apt=()
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then need_apt+=(postgresql); fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then need_apt+=(nodejs npm); fi
if [ ! -x /usr/bin/chromium ]; then need_apt+=(chromium); fi # driven by Playwright; never `playwright install`
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "install: apt packages: ${need_apt[*]}"
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

stamp_of() { sha256sum "$@" | sha256sum | cut -c1-16; }

# The project.
want=$(stamp_of pyproject.toml)
if [ ! -f .venv/.installed ] || [ "$(cat .venv/.installed)" != "$want" ]; then
    echo "install: project virtualenv (.venv)"
    [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
    .venv/bin/pip install -q --upgrade pip 2>&1 | quiet_pip
    .venv/bin/pip install -q -e '.[test]' 2>&1 | quiet_pip
    .venv/bin/python -c "import nio, sqlalchemy, alembic, structlog" # fail here, not later
    echo "$want" > .venv/.installed
fi

# Synapse, kept apart from the project's dependencies, with the PostgreSQL driver (a binary wheel:
# no libpq-dev or compiler needed) for the benchmark that runs Synapse on PostgreSQL.
SYNAPSE_SPEC=${SYNAPSE_SPEC:-matrix-synapse[oidc]}
SYNAPSE_PG_SPEC=${SYNAPSE_PG_SPEC:-psycopg2-binary}
want="$SYNAPSE_SPEC $SYNAPSE_PG_SPEC"
if [ ! -f .cache/synapse-venv/.installed ] || [ "$(cat .cache/synapse-venv/.installed)" != "$want" ]; then
    echo "install: Synapse virtualenv (.cache/synapse-venv)"
    mkdir -p .cache
    [ -x .cache/synapse-venv/bin/python ] || "$PYTHON" -m venv .cache/synapse-venv
    .cache/synapse-venv/bin/pip install -q --upgrade pip 2>&1 | quiet_pip
    .cache/synapse-venv/bin/pip install -q "$SYNAPSE_SPEC" "$SYNAPSE_PG_SPEC" 2>&1 | quiet_pip
    .cache/synapse-venv/bin/python -c "import synapse, psycopg2" # fail here, not later
    echo "$want" > .cache/synapse-venv/.installed
fi

# node-oidc-provider for the OpenID tests, exactly as package-lock.json pins it.
OIDC_DIR=tests/harness/oidc_provider
want=$(stamp_of "$OIDC_DIR/package.json" "$OIDC_DIR/package-lock.json")
if [ ! -f "$OIDC_DIR/node_modules/.installed" ] || [ "$(cat "$OIDC_DIR/node_modules/.installed")" != "$want" ]; then
    echo "install: node-oidc-provider ($OIDC_DIR/node_modules)"
    (cd "$OIDC_DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    # Fail here, not later (stderr shown only then: Node 20 prints "Unsupported runtime", harmless).
    if ! out=$(cd "$OIDC_DIR" && node --input-type=module -e "await import('oidc-provider')" 2>&1); then
        echo "$out" >&2
        exit 1
    fi
    echo "$want" > "$OIDC_DIR/node_modules/.installed"
fi

# matrix-js-sdk with its Rust crypto (wasm, inside the npm package): the Element-grade client of the
# E2EE tests, exactly as package-lock.json pins it. npm's EBADENGINE warnings (the SDK declares
# node >= 22) are hidden by --loglevel=error; client.mjs polyfills what Node 20 lacks.
JS_CLIENT_DIR=tests/harness/js_client
want=$(stamp_of "$JS_CLIENT_DIR/package.json" "$JS_CLIENT_DIR/package-lock.json")
if [ ! -f "$JS_CLIENT_DIR/node_modules/.installed" ] || [ "$(cat "$JS_CLIENT_DIR/node_modules/.installed")" != "$want" ]; then
    echo "install: matrix-js-sdk ($JS_CLIENT_DIR/node_modules)"
    (cd "$JS_CLIENT_DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    # Fail here, not later: the client prints its "ready" line once the SDK is loaded, then exits
    # when stdin closes.
    if ! out=$(cd "$JS_CLIENT_DIR" && node client.mjs </dev/null 2>&1) || [[ "$out" != *'"event":"ready"'* ]]; then
        echo "$out" >&2
        exit 1
    fi
    echo "$want" > "$JS_CLIENT_DIR/node_modules/.installed"
fi

# The bot's own sources compiled ahead: under PYTHONDONTWRITEBYTECODE (set in this environment and
# in the Docker image) nothing writes .pyc at run time, and compiling ~100 modules at every launch
# costs about 0.18 s of the start-up budget. Python checks each .pyc against its source, so a stale
# one is never used.
.venv/bin/python -m compileall -q -j 0 bot web_callback migrations >/dev/null
