#!/usr/bin/env bash
# cors_chromium.sh — the browser check of CORS (docs/daemon.md, cors_origins): a page served
# from one origin calls the daemon on another with fetch(), JSON and a bearer token (so the
# browser sends a preflight first), in headless Chromium.
#   1. from an origin in cors_origins: the generation comes back (the page reads the image);
#   2. from an origin not in the list: the browser refuses to hand the answer to the page.
# Run by hand (Chromium from Debian: apt-get install chromium); not part of CI.
# Usage: tests/ref/cors_chromium.sh     (SDXLD=... for another binary)
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${SDXLD:-build/server/sdxld}
CHROME=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[ -n "$CHROME" ] || { echo "no chromium found (apt-get install chromium)"; exit 2; }
T=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$T"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PD=$(port) PA=$(port) PB=$(port)
TOKEN=cors-check-token-0123456789
echo "$TOKEN" > "$T/tokens" && chmod 600 "$T/tokens"
"$BIN" serve --model models/shapes-small --listen "127.0.0.1:$PD" --threads 1 --api_token_file "$T/tokens" \
    --cors_origins "http://127.0.0.1:$PA" > "$T/sdxld.log" 2>&1 &
pids+=($!)
mkdir -p "$T/www"
cat > "$T/www/page.html" <<HTML
<!doctype html><html><head><title>cors</title></head><body>pending<script>
fetch("http://127.0.0.1:$PD/v1/images/generations", {
  method: "POST",
  headers: {"Content-Type": "application/json", "Authorization": "Bearer $TOKEN"},
  body: JSON.stringify({prompt: "a red circle", size: "64x64", response_format: "b64_json"})
}).then(r => r.json()).then(j => { document.body.textContent = "RESULT ok " + j.data[0].b64_json.length; })
  .catch(e => { document.body.textContent = "RESULT refused " + e; });
</script></body></html>
HTML
(cd "$T/www" && exec python3 -m http.server "$PA" --bind 127.0.0.1 > "$T/a.log" 2>&1) & pids+=($!)
(cd "$T/www" && exec python3 -m http.server "$PB" --bind 127.0.0.1 > "$T/b.log" 2>&1) & pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PD/readyz" >/dev/null && break; sleep 0.2; done
visit() {
  timeout 120 "$CHROME" --headless=new --no-sandbox --disable-gpu --no-first-run --user-data-dir="$T/profile-$1" \
      --virtual-time-budget=60000 --dump-dom "http://127.0.0.1:$1/page.html" 2>/dev/null | grep -o "RESULT [a-z]* [^<]*" || true
}
fails=0
a=$(visit "$PA"); echo "allowed origin: $a"
[[ $a == "RESULT ok "* ]] || fails=$((fails + 1))
b=$(visit "$PB"); echo "other origin:   $b"
[[ $b == "RESULT refused "* ]] || fails=$((fails + 1))
grep -q "OPTIONS /v1/images/generations" "$T/sdxld.log" && echo "the daemon answered the preflight (OPTIONS)" \
    || { echo "no preflight seen in the daemon's log"; fails=$((fails + 1)); }
"$CHROME" --version
[ $fails -eq 0 ] && echo "cors_chromium: 3/3 passed" || { echo "cors_chromium: $fails failed"; exit 1; }
