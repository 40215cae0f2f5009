// A link in the menu bar to the same page in the other edition
// (target/book/en/x.html <-> target/book/zh-CN/x.html). Both editions are
// built side by side by scripts/book.sh; under `--serve` only one edition
// exists, and the link is left out.
(function () {
    "use strict";
    const lang = document.documentElement.lang; // "en" or "zh-CN"
    const other = lang === "zh-CN" ? "en" : "zh-CN";
    const marker = "/" + lang + "/";
    const path = window.location.pathname;
    const at = path.lastIndexOf(marker);
    const bar = document.querySelector(".right-buttons");
    if (at < 0 || !bar) {
        return;
    }
    const link = document.createElement("a");
    link.className = "edition-switch";
    link.href = path.slice(0, at) + "/" + other + "/" + path.slice(at + marker.length) + window.location.hash;
    link.textContent = lang === "zh-CN" ? "English" : "中文";
    link.title = lang === "zh-CN" ? "Read this page in English" : "阅读本页的中文版";
    bar.prepend(link);
})();
