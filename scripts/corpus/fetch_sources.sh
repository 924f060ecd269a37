#!/usr/bin/env bash
# Downloads the Debian packages that lukv-tiny's training corpus is built from and unpacks
# them under data/raw/ (git-ignored). Runs on the development machine (Debian 12, apt reaches
# deb.debian.org); nothing is installed, packages are only downloaded and unpacked.
#
#   sword-text-kjv    King James Version (SWORD module engKJV2006eb)   public domain   training prose
#   sword-comm-mhcc   Matthew Henry's Concise Commentary (1706)         public domain   training prose
#   sword-comm-tdavid C. H. Spurgeon's Treasury of David (1869-1885)     public domain   training prose
#   dict-devil        Ambrose Bierce, The Devil's Dictionary (1911)      public domain   RESERVED: eval haystack only
#   wordnet-base      WordNet 3.0 lemma lists (index.adj, index.noun)    WordNet 3.0 licence (permissive)  key vocabularies
#
# Usage: bash scripts/corpus/fetch_sources.sh [DATADIR]   (default data/)
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${1:-data}
mkdir -p "$DATA/debs" "$DATA/raw"
PKGS="sword-text-kjv sword-comm-mhcc sword-comm-tdavid dict-devil wordnet-base"
(cd "$DATA/debs" && apt-get download $PKGS)
for deb in "$DATA"/debs/*.deb; do
  name=$(basename "$deb"); name=${name%%_*}
  rm -rf "$DATA/raw/$name"; mkdir -p "$DATA/raw/$name"
  dpkg -x "$deb" "$DATA/raw/$name"
done
ls -l "$DATA/debs"
