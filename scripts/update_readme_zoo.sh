#!/usr/bin/env bash
# Rewrite the zoo table of README.md from the shipped model cards.
set -euo pipefail
cd "$(dirname "$0")/.."
table=$(.venv/bin/python scripts/zoo_table.py 2>/dev/null)
python3 - "$table" <<'PY'
import sys
p = "README.md"
s = open(p).read()
a, b = s.index("<!-- zoo-table -->"), s.index("<!-- /zoo-table -->")
open(p, "w").write(s[: a + len("<!-- zoo-table -->")] + "\n" + sys.argv[1] + "\n" + s[b:])
PY
