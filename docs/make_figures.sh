#!/usr/bin/env bash
# Regenerates the README's two pictures (run from the repository root with .venv active):
#   bash docs/make_figures.sh [CONTACT_SHEET_PNG]
# - docs/images/rulegraph.png: `snakemake --rulegraph` on the tiny config, drawn by Debian's graphviz
#   (installed with apt-get when `dot` is missing).
# - docs/images/contact-sheet.jpg: a ~900 px wide JPEG of a contact sheet the render stage wrote
#   (default: the first results/videos/*.png). Update the caption in README.md when you change it.
set -euo pipefail
sheet=${1:+$(realpath "$1")}   # resolve before moving to the repository root
cd "$(dirname "$0")/.."
mkdir -p docs/images

if ! command -v dot >/dev/null; then
  echo "make_figures: installing Debian's graphviz" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq graphviz >/dev/null
fi

snakemake --rulegraph --configfile config/tiny/params.yaml | dot -Tpng -Gdpi=80 -o docs/images/rulegraph.png
echo "make_figures: wrote docs/images/rulegraph.png" >&2

if [ -z "$sheet" ]; then
  sheet=$(ls results/videos/*.png 2>/dev/null | head -n 1 || true)
fi
if [ -z "$sheet" ] || [ ! -f "$sheet" ]; then
  echo "make_figures: no contact sheet (run the render phase, or pass a PNG path); kept docs/images/contact-sheet.jpg" >&2
  exit 0
fi

python -c '
import sys
from PIL import Image
src, dst, width = sys.argv[1], sys.argv[2], 900
im = Image.open(src).convert("RGB")
if im.width > width:
    im = im.resize((width, round(im.height * width / im.width)), Image.LANCZOS)
im.save(dst, "JPEG", quality=80, optimize=True, progressive=True)
print(f"make_figures: wrote {dst} ({im.width}x{im.height}) from {src}", file=sys.stderr)
' "$sheet" docs/images/contact-sheet.jpg
