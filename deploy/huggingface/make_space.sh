#!/bin/sh
# Assemble a Hugging Face Docker Space from this checkout: `deploy/huggingface/make_space.sh DIR`
# (DIR: a clone of your Space's git repository). It copies the sources the image needs, this
# folder's README.md (the Space's front matter) and the project's Dockerfile with the Space's
# port (7860) as the default PORT. Then commit and push DIR. Steps: deploy/huggingface/README.md.
set -eu
[ $# -eq 1 ] || { echo "usage: $0 SPACE_DIR" >&2; exit 2; }
root=$(cd "$(dirname "$0")/../.." && pwd)
out=$1
mkdir -p "$out"
(cd "$root" && tar -c --exclude=__pycache__ --exclude='*.pyc' \
    --exclude="*.whl" --exclude=.built \
    pyproject.toml requirements.lock .dockerignore src deploy/container) | tar -x -C "$out"
cp "$root/deploy/huggingface/README.md" "$out/README.md"
{
    cat "$root/Dockerfile"
    printf '\n# Hugging Face Spaces: the app listens on app_port (README.md front matter).\n'
    printf 'ENV PORT=7860\nEXPOSE 7860\n'
} > "$out/Dockerfile"
echo "Space files written to $out: commit and push them to your Space."
