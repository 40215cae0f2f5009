#!/usr/bin/env node
// Make an mdBook search index find Chinese words.
//
//     node book/tools/cjk_index.js BOOK_DIR     rewrite BOOK_DIR/searchindex-*.js in place
//
// mdBook cuts text into words at spaces and hyphens (rust-lang/mdBook#1081),
// so a Chinese sentence is indexed as one long "word" and 粘包 finds nothing.
// This rebuilds the index from the text mdBook stored with it (every section's
// title, body and breadcrumbs), with the very code the browser runs on a
// query: elasticlunr from the built book, then book/theme/cjk-search.js, which
// cuts Han text into pairs of characters and keeps Han words out of the ASCII
// trimmer. A query and the pages are therefore cut by one implementation, and
// English words go through elasticlunr's usual trimmer, stop words and
// stemmer as before ("sockets" still finds "socket").
//
// Run by scripts/book.sh after each edition is built; book/tools/check.py
// then searches the result under node with the same scripts.
"use strict";
const fs = require("fs");
const path = require("path");
const vm = require("vm");

const PREFIX = "window.search = Object.assign(window.search, JSON.parse('";
const SUFFIX = "'));";

function pick(dir, re) {
    const hits = fs.readdirSync(dir).filter((f) => re.test(f));
    if (hits.length !== 1) {
        throw new Error(`${dir}: expected one file matching ${re}, found [${hits}]`);
    }
    return path.join(dir, hits[0]);
}

function main(dir) {
    globalThis.window = globalThis;
    globalThis.search = {};
    vm.runInThisContext(fs.readFileSync(pick(dir, /^elasticlunr.*\.js$/), "utf8"));
    vm.runInThisContext(fs.readFileSync(pick(path.join(dir, "theme"), /^cjk-search.*\.js$/), "utf8"));
    const file = pick(dir, /^searchindex.*\.js$/);
    const text = fs.readFileSync(file, "utf8").trimEnd();
    if (!text.startsWith(PREFIX) || !text.endsWith(SUFFIX)) {
        throw new Error(`${file} is not in the format of mdBook 0.5 (see the version pinned in scripts/book.sh)`);
    }
    vm.runInThisContext(text);
    const old = window.search.index;
    if (old.pipeline.includes("han-aware-trimmer")) {
        return; // already rewritten
    }
    const docs = old.documentStore.docs;
    if (!old.documentStore.save || Object.keys(docs).length === 0) {
        throw new Error(`${file}: the index keeps no text to rebuild from`);
    }

    const index = new elasticlunr.Index();
    index.setRef(old.ref);
    for (const field of old.fields) {
        index.addField(field);
    }
    index.saveDocument(true);
    // The query side runs the pipeline stored here (Index.load), so both
    // sides use the Han-aware trimmer, then elasticlunr's own steps.
    index.pipeline = elasticlunr.Pipeline.load(old.pipeline.map((p) => (p === "trimmer" ? "han-aware-trimmer" : p)));
    for (const [ref, doc] of Object.entries(docs)) {
        index.addDoc(Object.assign({}, doc, { [old.ref]: ref }), false);
        // The stored text is for the result teasers; the ref is not needed there.
        delete index.documentStore.docs[ref][old.ref];
    }
    window.search.index = index.toJSON();
    const json = JSON.stringify(window.search);
    fs.writeFileSync(file, PREFIX + json.replace(/\\/g, "\\\\").replace(/'/g, "\\'") + SUFFIX);
}

if (process.argv.length !== 3) {
    console.error("usage: node book/tools/cjk_index.js BOOK_DIR");
    process.exit(2);
}
try {
    main(process.argv[2]);
} catch (e) {
    console.error(`cjk_index: ${e.message}`);
    process.exit(1);
}
