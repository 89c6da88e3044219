// Command gitserver serves Git repositories over smart HTTP for the GitOps end-to-end tests (tests/e2e/test_gitops.py):
// Flux's source-controller clones from it. It is the Flux project's own Git test server
// (github.com/fluxcd/pkg/gittestserver), run as a process: repositories live under -root, a push to a missing
// repository creates it, and the base URL is written to -url-file once the server listens.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/fluxcd/pkg/gittestserver"
)

func main() {
	root := flag.String("root", "", "directory holding the bare repositories (required)")
	urlFile := flag.String("url-file", "", "file to write the server's base URL to once it listens")
	flag.Parse()
	if *root == "" {
		fmt.Fprintln(os.Stderr, "gitserver: -root is required")
		os.Exit(2)
	}
	if err := os.MkdirAll(*root, 0o755); err != nil {
		log.Fatalf("gitserver: %v", err)
	}
	srv := gittestserver.NewGitServer(*root).AutoCreate()
	if err := srv.StartHTTP(); err != nil {
		log.Fatalf("gitserver: start: %v", err)
	}
	defer srv.StopHTTP()
	url := srv.HTTPAddress()
	if *urlFile != "" {
		tmp := *urlFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(url+"\n"), 0o644); err != nil {
			log.Fatalf("gitserver: %v", err)
		}
		if err := os.Rename(tmp, *urlFile); err != nil {
			log.Fatalf("gitserver: %v", err)
		}
	}
	log.Printf("gitserver: serving %s at %s", srv.Root(), url)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
}
