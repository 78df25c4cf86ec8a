// Command gendocs writes docs/config.md from the config key definitions so
// the reference can never drift from the code (TestDocsUpToDate checks it).
//
//	go generate ./internal/config
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"

	"github.com/dws-gateway/dws/internal/config"
)

func main() {
	out := flag.String("o", "docs/config.md", "file to write")
	flag.Parse()
	var b bytes.Buffer
	if err := config.GenerateDocs(&b); err != nil {
		fmt.Fprintln(os.Stderr, "gendocs:", err)
		os.Exit(1)
	}
	if err := os.WriteFile(*out, b.Bytes(), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "gendocs:", err)
		os.Exit(1)
	}
}
