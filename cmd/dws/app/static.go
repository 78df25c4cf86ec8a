package app

import (
	"embed"
	"net/http"
	"strconv"
)

// clientFiles are the reference browser client and its demo page (issue
// 11): served by the ops listener so `make run` users can open the demo
// next to the dev URL, and so apps can copy the client from a running pod.
//
//go:embed static/dws-client.js static/demo.html
var clientFiles embed.FS

// clientCacheControl lets a browser reuse the files for a few minutes but
// revalidate after that: they change with the binary, which has no
// content hash in their names.
const clientCacheControl = "public, max-age=300"

// serveClientFile answers GET /client/{name} with the embedded file name
// and its content type. The bytes are read once, at route set-up.
func serveClientFile(name, contentType string) http.HandlerFunc {
	body, err := clientFiles.ReadFile("static/" + name)
	if err != nil {
		panic("app: embedded client file missing: " + name) // caught by the build's tests
	}
	size := strconv.Itoa(len(body))
	return func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", contentType)
		h.Set("Content-Length", size)
		h.Set("Cache-Control", clientCacheControl)
		h.Set("X-Content-Type-Options", "nosniff")
		if r.Method == http.MethodHead {
			return
		}
		_, _ = w.Write(body)
	}
}
