// Package web holds the browser assets herald serves itself: the live
// dashboard at / and the JavaScript client at /herald.js (types at
// /herald.d.ts). They are embedded in the binary and need no build step.
//
// The client and dashboard are tested from web/browser_test.go, which runs
// the JavaScript tests under web/test with Node and headless Chromium.
package web

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

//go:embed static
var static embed.FS

// csp keeps the dashboard to its own origin: its scripts, styles and the
// websocket all come from the node that served it, and it is never framed.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// Handler serves the embedded assets. Each response carries an ETag (the
// embedded files have no modification time), so browsers revalidate
// cheaply; herald.js may be imported cross-origin, since it is public code
// and tokens, not cookies, authenticate.
func Handler() http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	etags := make(map[string]string)
	_ = fs.WalkDir(sub, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(sub, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		etags["/"+p] = `"` + hex.EncodeToString(sum[:8]) + `"`
		return nil
	})
	files := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := path.Clean("/" + r.URL.Path)
		if p == "/" {
			p = "/index.html"
		}
		h := w.Header()
		if tag, ok := etags[p]; ok {
			h.Set("ETag", tag)
			h.Set("Cache-Control", "no-cache")
		}
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		switch {
		case strings.HasSuffix(p, ".html"):
			h.Set("Content-Security-Policy", csp)
		case strings.HasSuffix(p, ".js"), strings.HasSuffix(p, ".d.ts"):
			h.Set("Access-Control-Allow-Origin", "*")
			if strings.HasSuffix(p, ".d.ts") {
				h.Set("Content-Type", "text/plain; charset=utf-8")
			}
		}
		files.ServeHTTP(w, r)
	})
}
