// Command perf measures what the wsgate proxy costs compared with a raw TCP copy
// proxy, a message-level proxy built on gorilla/websocket, and no proxy at all.
//
//	go run ./integration/perf                      # every workload, defaults (< 5 min on 2 cores)
//	go run ./integration/perf -workloads pingpong-1k-50,stream-64k -duration 5s
//	go run ./integration/perf -workloads idle -idle 5000
//	go run ./integration/perf -workloads pingpong-1k-50 -variants wsgate -profile /tmp/prof
//	go tool pprof -top /tmp/prof/pingpong-1k-50-wsgate-r*.pprof   # the rounds merged
//
// Throughput and latency depend on whatever else the machine runs (the report
// shows that load per measurement); the proxy's CPU time, system calls and
// allocations per message are the figures that stay put.
//
// One process runs a gorilla/websocket echo upstream and the gorilla/websocket
// clients. The proxies run in child processes (this binary re-executed with the
// hidden flag -serve-proxy KIND), so their CPU time (utime+stime from
// /proc/PID/stat) and their allocations (runtime.MemStats read in the child over
// a line protocol on its stdin/stdout) are theirs alone. Every workload is run
// against every variant in turn (A B C D E, A B C D E, ... for -rounds rounds) and
// the median of the rounds is reported, as absolute figures and as ratios to the
// raw TCP copy proxy measured in the same run.
//
// Variants:
//
//	direct   the client talks to the echo upstream itself (no proxy, no proxy CPU)
//	tcp      raw TCP copy proxy: accept, dial, two io.Copy (splice(2) on Linux) — the baseline
//	copy     the same proxy copying through a user-space buffer (-copy-buffer, 32k
//	         like Caddy's reverse_proxy): what moving bytes through user space costs
//	wsgate   proxy.New served by net/http (frame-level inspect and forward)
//	gorilla  message-level proxy: gorilla Upgrade + Dial, ReadMessage→WriteMessage both ways
//
// Workloads (names for -workloads):
//
//	pingpong-SIZE-N  N sessions, each sends one SIZE-byte binary message and waits for its echo
//	stream-SIZE      one session writes SIZE-byte messages continuously, a reader goroutine reads the echoes
//	idle             -idle sessions opened and left idle: memory per proxied session
package main

import (
	"fmt"
	"io"
	"os"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "perf:", err)
		os.Exit(1)
	}
}

// run is the whole program: the harness, or (with -serve-proxy) a proxy child.
func run(args []string, stdout, stderr io.Writer) error {
	opts, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if opts.serveProxy != "" {
		return serveProxyChild(opts.serveProxy, opts.upstream, opts.copyBuffer, os.Stdin, stdout)
	}
	rep, err := runHarness(opts, stderr)
	if err != nil {
		return err
	}
	rep.writeMarkdown(stdout)
	return nil
}
