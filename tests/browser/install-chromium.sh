#!/usr/bin/env bash
# Debian's Chromium and its WebDriver (chromedriver) for the ops console's browser test, when missing.
# `make test` runs this first; nothing is downloaded by Selenium itself (the test names both binaries).
set -euo pipefail

# A CJK font too: the console shows merchants' Chinese text, and its screenshots should too.
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 \
  && [ -n "$(fc-list :lang=zh 2>/dev/null)" ]; then
  exit 0
fi
bash "$(dirname "$0")/../../deploy/apt-install.sh" "chromium, chromedriver and a CJK font" "" \
  chromium chromium-driver fonts-wqy-zenhei
chromium --version
