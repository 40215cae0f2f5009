// Search that finds Chinese words (粘包, 套接字, 三次握手).
//
// mdBook's search (elasticlunr) cuts text into words at spaces and hyphens.
// Chinese is written without spaces, so a whole sentence became one "word"
// and no query could match it (rust-lang/mdBook#1081). This file makes the
// tokenizer cut every run of Han characters into its pairs of adjacent
// characters (a lone character stays itself), so 三次握手 is looked up as
// 三次, 次握, 握手, and the "all words must match" setting of book.toml finds
// the sections where the four characters appear together (or, rarely,
// apart). The pages are cut the same way: scripts/book.sh rebuilds each
// edition's search index with book/tools/cjk_index.js, which loads this very
// file under node, and book/tools/check.py searches with it there too.
(function () {
    "use strict";
    if (typeof elasticlunr === "undefined") {
        return;
    }
    // Han ideographs (the CJK Unified Ideographs, extension A, compatibility).
    const HAN = /[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]/;
    // Chinese punctuation and full-width forms separate words, like spaces.
    const CJK_PUNCT = /[\u3000-\u303f\uff00-\uffef]/;

    // One token of the original tokenizer (text between spaces and hyphens,
    // lower-cased) -> its words: each run of Han characters becomes its
    // pairs (a lone character stays itself), the text between runs stays
    // one word for the usual pipeline (trimmer, stop words, stemmer).
    function splitHan(token) {
        const out = [];
        let run = "";
        let other = "";
        const flushRun = function () {
            if (run.length === 1) {
                out.push(run);
            }
            for (let i = 0; i + 1 < run.length; i++) {
                out.push(run.slice(i, i + 2));
            }
            run = "";
        };
        const flushOther = function () {
            if (other !== "") {
                out.push(other);
            }
            other = "";
        };
        for (const ch of token) {
            if (HAN.test(ch)) {
                flushOther();
                run += ch;
            } else if (CJK_PUNCT.test(ch)) {
                flushOther();
                flushRun();
            } else {
                flushRun();
                other += ch;
            }
        }
        flushOther();
        flushRun();
        return out;
    }

    const original = elasticlunr.tokenizer;
    const tokenizer = function () {
        const out = [];
        for (const token of original.apply(this, arguments)) {
            for (const word of splitHan(token)) {
                out.push(word);
            }
        }
        return out;
    };
    // The original reads its separator as elasticlunr.tokenizer.seperator.
    Object.assign(tokenizer, original);
    elasticlunr.tokenizer = tokenizer;

    // elasticlunr's trimmer strips \W from both ends, and without the
    // unicode flag every Han character is \W: it would erase 粘包. The
    // rewritten index names this step instead of "trimmer" in its pipeline.
    const trimmer = function (token) {
        return HAN.test(token) ? token : elasticlunr.trimmer(token);
    };
    elasticlunr.Pipeline.registerFunction(trimmer, "han-aware-trimmer");
})();
