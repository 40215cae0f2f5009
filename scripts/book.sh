#!/usr/bin/env bash
# Build the course book, in English and in Simplified Chinese, from book/.
#
#   scripts/book.sh                 both editions: target/book/en, target/book/zh-CN
#   scripts/book.sh --serve [LANG]  live preview of one edition (en or zh-CN, default en)
#                                   on http://127.0.0.1:3000, rebuilt on every save
#   scripts/book.sh --check         what CI runs: build both editions and fail on a missing
#                                   include or anchor, a pasted listing, a broken internal
#                                   link, a zh-CN message that is untranslated or stale, or
#                                   a Chinese search term ($ZH_SEARCH_TERMS) that finds no page
#   scripts/book.sh --update-po     after editing the English: extract book/po/messages.pot
#                                   and merge it into book/po/zh-CN.po (changed paragraphs
#                                   become fuzzy: translate them, then remove the flag)
#   scripts/book.sh --prepare       only copy the charts and record the transcripts
#
# The tools are pinned and installed on first use into target/tools (nothing
# global): mdbook and mdbook-i18n-helpers with `cargo install --locked`, and
# gettext (msgmerge, msgfmt) and node (for the search check) from Debian when
# they are missing. The only network this needs is the package registries.
#
# Search: mdBook's search cuts words at spaces, which Chinese does not have.
# book/theme/cjk-search.js teaches the browser's search to cut Han text into
# pairs of characters, and after each build book/tools/cjk_index.js rebuilds
# the search index under node with that same script, so pages and queries are
# cut alike. --check searches the result under node, with the same scripts,
# and fails if a term of ZH_SEARCH_TERMS finds nothing.
#
# Every listing in the book is an {{#include}} of a workspace file through a
# named anchor; every transcript is recorded here, by running the programs
# (their debug builds), into book/src/generated/ (git-ignored) together with
# the charts from results/. That includes packets: `peek` ladders and runs
# through the `impair` relay (record_wire). peek needs an unprivileged user
# namespace (or root); where the kernel refuses one, the build stops with
# peek's one-line reason.
set -euo pipefail
cd "$(dirname "$0")/.."

MDBOOK_VERSION=0.5.4
# 0.4.x is the mdbook-i18n-helpers line built for mdbook 0.5 (its
# preprocessor refuses an mdbook outside 0.5).
I18N_VERSION=0.4.0
TOOLS=$PWD/target/tools
OUT=$PWD/target/book
GEN=book/src/generated
ZH_TITLE="Rust 网络编程：一章一个程序"
ZH_SEARCH_TERMS=(粘包 套接字 三次握手)

export PATH="$TOOLS/bin:$PATH"
export CARGO_TERM_COLOR=never

say() { printf '== %s\n' "$*"; }
die() { printf 'book: %s\n' "$*" >&2; exit 1; }

# Run a long, quiet step (cargo install, cargo build) between two lines:
# what starts and what it may cost, then how long it took, so the build is
# never silent for minutes without saying why.
timed() {
    local what=$1 start=$SECONDS
    shift
    say "$what: started (minutes on a fresh machine, seconds when up to date)"
    "$@" || die "$what failed"
    say "$what: done in $((SECONDS - start)) s"
}

install_tools() {
    if ! mdbook --version 2>/dev/null | grep -qx "mdbook v$MDBOOK_VERSION"; then
        timed "installing mdbook $MDBOOK_VERSION into target/tools" \
            cargo install --quiet --locked --version "$MDBOOK_VERSION" mdbook \
            --root "$TOOLS" --target-dir "$TOOLS/build"
    fi
    if ! grep -qs "mdbook-i18n-helpers $I18N_VERSION " "$TOOLS/.crates.toml" ||
        ! command -v mdbook-gettext >/dev/null; then
        timed "installing mdbook-i18n-helpers $I18N_VERSION into target/tools" \
            cargo install --quiet --locked --version "$I18N_VERSION" mdbook-i18n-helpers \
            --root "$TOOLS" --target-dir "$TOOLS/build"
    fi
    if ! command -v msgmerge >/dev/null || ! command -v msgfmt >/dev/null; then
        say "installing gettext (msgmerge, msgfmt)"
        [[ $(id -u) == 0 ]] || die "gettext is missing: apt-get install gettext"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gettext >/dev/null
    fi
    if ! command -v node >/dev/null; then
        say "installing node (the search index is rebuilt with the browser's search code)"
        [[ $(id -u) == 0 ]] || die "node is missing: apt-get install nodejs"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs >/dev/null
    fi
    command -v python3 >/dev/null || die "python3 is needed for the include and link checks"
}

# Record one transcript: the command line as typed, then what it printed.
# Each program runs on port 0 inside its own process (the demos), so nothing
# here listens on a fixed port or needs a second terminal.
record() {
    local name=$1 shown=$2
    shift 2
    local out
    if ! out=$(timeout 120 "$@" 2>/dev/null); then
        die "recording $name: \`$shown\` failed; run it by hand to see why"
    fi
    printf '$ %s\n%s\n' "$shown" "$out" >"$GEN/$name.txt"
}

# The same for a command that must fail: its error line is the point, and
# the exit status is shown.
record_failure() {
    local name=$1 shown=$2 out status=0
    shift 2
    out=$(timeout 60 "$@" 2>&1) || status=$?
    ((status != 0 && status != 124)) || die "recording $name: \`$shown\` should have failed (status $status)"
    printf '$ %s\n%s\n$ echo $?\n%s\n' "$shown" "$out" "$status" >"$GEN/$name.txt"
}

# Record a run under peek. peek needs a user and network namespace of its
# own; where the kernel refuses one it exits with status 4 and one line
# saying which setting to look at, and the book stops with that line rather
# than print chapters whose packets are missing. $PEEK_FILTER, when set, is
# a command the output goes through (to keep one conversation of many).
record_peek() {
    local name=$1 shown=$2 out err status=0
    shift 2
    err=$(mktemp)
    out=$(timeout 120 target/debug/peek "$@" 2>"$err") || status=$?
    if ((status == 4)); then
        local why
        why=$(grep '^peek:' "$err" | tail -1)
        rm -f "$err"
        die "recording $name needs peek, which cannot run here: ${why:-peek exited with status 4}"
    fi
    rm -f "$err"
    ((status == 0)) || die "recording $name: \`$shown\` failed (status $status); run it by hand to see why"
    [[ $out == *"== peek: the command exited with status 0 =="* && $out == *" captured on lo "* ]] ||
        die "recording $name: peek printed no capture"
    if [[ -n ${PEEK_FILTER:-} ]]; then
        out=$(printf '%s\n' "$out" | $PEEK_FILTER)
        [[ -n $out ]] || die "recording $name: nothing left after $PEEK_FILTER"
    fi
    printf '$ %s\n%s\n' "$shown" "$out" >"$GEN/$name.txt"
}

# From peek's output, the program's first lines and the first conversation
# only (the TLS demo makes several), then "...".
first_conversation() {
    awk '/^== peek:/ { inpeek = 1 } !inpeek { print; next }
         inpeek && /^$/ { n++; if (n == 2) { print "..."; exit } } { print }'
}

# The annotated hex dump of --layers alone, without the ladder before it.
layers_only() {
    sed -n '/^packet [0-9]*: /,/^$/p'
}

# A loopback port nobody listens on: bound by the kernel's choice, then closed.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

prepare() {
    mkdir -p "$GEN"
    # The charts of results/, with their legend moved below the plot (it
    # covers data where loadgen draws it), and the zh-CN edition's copies with
    # titles and axes in Chinese.
    python3 book/tools/charts.py results "$GEN"
    python3 book/tools/charts.py results "$GEN/zh-CN" --zh
    timed "building the chapter binaries, peek and impair (debug) to record transcripts" \
        cargo build --quiet -p tcp-echo -p udp-echo -p threaded-server -p async-server -p tls-echo -p lab \
        -p peek -p impair -p chat
    local bin=target/debug
    record tcp-echo-demo "cargo run -p tcp-echo" "$bin/tcp-echo"
    record udp-echo-demo "cargo run -p udp-echo" "$bin/udp-echo"
    record threaded-demo "cargo run -p threaded-server" "$bin/threaded-server"
    record async-demo "cargo run -p async-server" "$bin/async-server"
    record tls-demo "cargo run -p tls-echo 2>/dev/null" "$bin/tls-echo"
    # The chat chapter's demo: three scripted members, one at a time, so the
    # lines come in one order on every run (only the port changes). What the
    # chapter says about it is checked: who hears what, and what nobody hears.
    shows chat-demo '^ alice <- \* The room contains: ?$' '^   bob <- \[alice\] hi bob$' \
        '^ carol <- \* The room contains: alice, bob$' '^ alice <- \* carol has left the room$' \
        '^   bob <- \* server shutting down$' -- \
        record chat-demo "cargo run -p chat" "$bin/chat"
    ! grep -Eq '^ (alice <- \[alice\]|carol <- \[alice\] hi bob)' "$GEN/chat-demo.txt" ||
        die "chat-demo: a member heard its own line, or a line said before it joined; the chat chapter says not"
    record server-help "cargo run -p tcp-echo -- server --help" "$bin/tcp-echo" server --help
    local port
    port=$(free_port)
    record_failure tcp-refused "cargo run -p tcp-echo -- client --addr 127.0.0.1:$port hello" \
        "$bin/tcp-echo" client --addr "127.0.0.1:$port" hello
    record lab-list "cargo run -p lab -- list" "$bin/lab" list
    record read100 "python3 book/python/read100.py" python3 -B book/python/read100.py
    record_wire
}

# What the network does, shown: packets drawn by peek (each run in its own
# network namespace), and the impair relay's loss, duplication, reordering,
# delay, splitting and coalescing between a real client and server.
record_wire() {
    say "recording packets with peek and runs through impair"
    local wire="python3 -B peek/lessons/wire.py" p="target/debug/peek --"
    PEEK_FILTER=layers_only shows peek-layers '^transport layer: TCP' '^payload: 5 bytes' -- \
        record_peek peek-layers \
        "target/debug/peek --layers 4 -- python3 peek/lessons/wire.py close | sed -n '/^packet 4:/,/^\$/p'" \
        --layers 4 -- $wire close
    shows peek-close '^ +4 .*PSH ACK seq=1 ack=1 .*len=5 "hello"' '^ +5 .*ack=6 ' 'ack=2 ' 'ack=7 ' -- \
        record_peek peek-close "$p python3 peek/lessons/wire.py close" -- $wire close
    shows peek-sticky-cork 'server: 1 recv\(\) calls' '^ +4 .*len=14 "one.two.three."' -- \
        record_peek peek-sticky-cork "$p python3 peek/lessons/wire.py sticky --cork" -- $wire sticky --cork
    shows peek-sticky-nodelay 'server: 3 recv\(\) calls' '^ +4 .*len=4 "one."' '^ +6 .*len=4 "two."' \
        '^ +8 .*len=6 "three."' -- \
        record_peek peek-sticky-nodelay "$p python3 peek/lessons/wire.py sticky --nodelay --pause 50 --reader eager" \
        -- $wire sticky --nodelay --pause 50 --reader eager
    shows peek-halfclose '^ +6 .*FIN ACK seq=6 ' '^ +7 .*len=26 ' '^ +9 .*FIN ACK' -- \
        record_peek peek-halfclose "$p python3 peek/lessons/wire.py halfclose" -- $wire halfclose
    shows peek-unread '^ +6 .*RST' 'ConnectionResetError' -- \
        record_peek peek-unread "$p python3 peek/lessons/wire.py close --unread" -- $wire close --unread
    shows peek-udp-closed 'ICMP port unreachable' 'ConnectionRefusedError' -- \
        record_peek peek-udp-closed "$p python3 peek/lessons/wire.py udp-closed" -- $wire udp-closed
    PEEK_FILTER=first_conversation shows peek-tls '^ +4 .*ClientHello' '^ +6 .*ServerHello' \
        'len=28 TLS\[app-data 23\]' -- \
        record_peek peek-tls "$p target/debug/tls-echo" -- target/debug/tls-echo
    local relay="python3 book/python/through_impair.py" run="python3 -B book/python/through_impair.py"
    shows impair-split 'server: ([3-9]|[1-9][0-9]+) recv\(\) calls' -- \
        record impair-split "$relay tcp-split --toxics '--split=4 --direction up --seed 7'" \
        $run tcp-split --toxics '--split=4 --direction up --seed 7'
    shows impair-coalesce 'server: 3 recv\(\) calls' 'server: 1 recv\(\) calls' -- \
        record impair-coalesce "$relay tcp-coalesce --toxics '--coalesce 50ms --direction up'" \
        $run tcp-coalesce --toxics '--coalesce 50ms --direction up'
    local toxics='--loss 10% --dup 10% --reorder 10% --seed 7'
    local client='--count 12 --window 4 --timeout 300ms --retries'
    shows impair-udp ' lost \(no reply' 'duplicate reply' 'client exit status 1' -- \
        record impair-udp "$relay udp --toxics '$toxics' --client '$client 0 --size 16'" \
        $run udp --toxics "$toxics" --client "$client 0 --size 16"
    shows impair-udp-retries '12 received, 0 lost' 'resending' 'client exit status 0' -- \
        record impair-udp-retries "$relay udp --toxics '$toxics --delay 20ms --jitter 5ms' --client '$client 3 --size 16'" \
        $run udp --toxics "$toxics --delay 20ms --jitter 5ms" --client "$client 3 --size 16"
}

# `shows NAME PATTERN... -- RECORDING...`: make the recording, and make it
# again (three runs at most) until its transcript matches every extended
# regular expression: what the chapter's prose says about it (packet
# numbers, counts). Ports and times are never matched: they change on
# every run. A loaded machine can delay an ACK and renumber a ladder; three
# runs that all disagree with the prose stop the build.
shows() {
    local name=$1 attempt missing="" pattern
    shift
    local -a patterns=()
    while [[ $1 != -- ]]; do
        patterns+=("$1")
        shift
    done
    shift
    for attempt in 1 2 3; do
        "$@"
        missing=""
        for pattern in "${patterns[@]}"; do
            grep -Eq -- "$pattern" "$GEN/$name.txt" || { missing=$pattern; break; }
        done
        [[ -z $missing ]] && return 0
        say "$name: run $attempt of 3 does not show /$missing/, which the book says; running it again"
    done
    die "$name: three runs did not show /$missing/; the chapter's prose about $GEN/$name.txt needs a look"
}

# mdbook logs a missing include as an error and still exits 0: catch it.
build_one() {
    local lang=$1 dest=$2 log
    log=$(mktemp)
    if [[ $lang == en ]]; then
        mdbook build book -d "$dest" >"$log" 2>&1 || { cat "$log"; die "mdbook build ($lang) failed"; }
    else
        MDBOOK_BOOK__LANGUAGE=$lang MDBOOK_BOOK__TITLE=$ZH_TITLE \
            mdbook build book -d "$dest" >"$log" 2>&1 || { cat "$log"; die "mdbook build ($lang) failed"; }
    fi
    if grep -E '\b(ERROR|WARN)\b' "$log"; then
        rm -f "$log"
        die "mdbook reported problems building the $lang edition (above)"
    fi
    rm -f "$log"
    node book/tools/cjk_index.js "$dest" || die "rewriting the $lang search index failed"
    printf '%s: %s pages in %s\n' "$lang" "$(find "$dest" -maxdepth 1 -name '*.html' ! -name print.html ! -name 404.html ! -name toc.html | wc -l)" "${dest#"$PWD"/}"
}

extract_pot() {
    local dest=$1
    MDBOOK_OUTPUT='{"xgettext": {"pot-file": "messages.pot", "granularity": 0}}' \
        mdbook build book -d "$dest" >/dev/null 2>&1 || die "mdbook-xgettext failed"
}

# Merge the committed translation with a fresh template (without touching the
# committed file) and count: a changed English paragraph comes out fuzzy
# (stale), a new one untranslated.
check_translation() {
    local po=book/po/zh-CN.po pot=$OUT/po/messages.pot merged=$OUT/po/zh-CN.merged.po stats
    rm -rf "$OUT/po"
    extract_pot "$OUT/po"
    msgmerge --quiet --no-wrap -o "$merged" "$po" "$pot"
    stats=$(msgfmt --check --statistics -o /dev/null "$merged" 2>&1) || die "msgfmt: $stats"
    printf 'zh-CN translation: %s (%s messages in the template)\n' "$stats" "$(grep -c '^msgid ' "$pot" | awk '{print $1 - 1}')"
    if [[ $stats == *fuzzy* || $stats == *untranslated* ]]; then
        msgattrib --only-fuzzy --no-wrap "$merged" | grep -A1 '^#, fuzzy' | sed -n 's/^msgid /  stale: /p' | head -20 || true
        msgattrib --untranslated --no-wrap "$merged" | sed -n 's/^msgid /  untranslated: /p' | grep -v '^  untranslated: ""$' | head -20 || true
        die "the zh-CN edition is not complete: run scripts/book.sh --update-po, translate, remove the fuzzy flags"
    fi
}

build_all() {
    install_tools
    prepare
    say "checking includes and anchors"
    python3 book/tools/check.py includes book/src
    rm -rf "$OUT/en" "$OUT/zh-CN"
    say "building the English edition"
    build_one en "$OUT/en"
    say "building the zh-CN edition"
    build_one zh-CN "$OUT/zh-CN"
}

case ${1:-} in
"")
    start=$SECONDS
    build_all
    (check_translation) || say "warning: the zh-CN edition above falls back to English where it is incomplete"
    say "done in $((SECONDS - start)) s: open target/book/en/index.html or target/book/zh-CN/index.html"
    ;;
--check)
    start=$SECONDS
    build_all
    say "checking links"
    python3 book/tools/check.py links "$OUT" "$OUT/en" "$OUT/zh-CN"
    say "checking that Chinese words are found by the zh-CN edition's search"
    python3 book/tools/check.py search "$OUT/zh-CN" "${ZH_SEARCH_TERMS[@]}" epoll
    # The rewritten index must still find English words (stemmed: sockets).
    python3 book/tools/check.py search "$OUT/en" sockets framing 粘包
    say "checking the translation"
    check_translation
    say "book: both editions built and checked in $((SECONDS - start)) s"
    ;;
--serve)
    lang=${2:-en}
    [[ $lang == en || $lang == zh-CN ]] || die "--serve takes en or zh-CN, not $lang"
    install_tools
    prepare
    if [[ $lang == en ]]; then
        exec mdbook serve book -d "$OUT/serve-en" -n 127.0.0.1 -p 3000
    fi
    export MDBOOK_BOOK__LANGUAGE=$lang MDBOOK_BOOK__TITLE=$ZH_TITLE
    exec mdbook serve book -d "$OUT/serve-$lang" -n 127.0.0.1 -p 3000
    ;;
--update-po)
    install_tools
    prepare
    extract_pot book/po
    msgmerge --quiet --update --backup=none --no-wrap book/po/zh-CN.po book/po/messages.pot
    msgattrib --no-obsolete --no-wrap -o book/po/zh-CN.po book/po/zh-CN.po
    msgfmt --statistics -o /dev/null book/po/zh-CN.po
    ;;
--prepare)
    prepare
    ;;
-h | --help)
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    ;;
*)
    die "unknown option $1 (see --help)"
    ;;
esac
