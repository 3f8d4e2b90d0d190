# Sourced by scripts/test and scripts/demo: make sure the project's virtual
# environment exists and holds the project (editable, with the extras in
# $EXTRAS), then set $PY to its python. Needs nothing but Python 3 on a fresh
# machine. The install runs again only when pyproject.toml or the extras change.
cd "$(dirname "$0")/.."
VENV="${KOMBU_APPENGINE_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$VENV"
fi
PY="$VENV/bin/python"
STAMP="$VENV/.installed-$("$PY" -c 'import hashlib, sys; print(hashlib.sha1(open("pyproject.toml", "rb").read() + sys.argv[1].encode()).hexdigest())' "${EXTRAS:-}")"
if [ ! -e "$STAMP" ]; then
    "$PY" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$PY" -m pip install --quiet --disable-pip-version-check -e ".${EXTRAS:+[$EXTRAS]}"
    touch "$STAMP"
fi
