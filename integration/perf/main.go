// Command perf measures what the wsgate proxy costs compared with a raw TCP copy
// proxy, a message-level proxy built on gorilla/websocket, Caddy's
// reverse_proxy, nginx, and no proxy at all.
//
//	go run ./integration/perf                      # every workload and variant, defaults (about 8 min on 2 cores)
//	go run ./integration/perf -workloads pingpong-1k-50,stream-64k -variants wsgate,caddy,nginx -duration 5s
//	go run ./integration/perf -workloads idle,idle-after-1k,idle-after-16k -idle 5000 -tls
//	go run ./integration/perf -workloads mass-close,mass-drop -mass-close 2000
//	go run ./integration/perf -workloads pingpong-1k-50 -variants wsgate -profile /tmp/prof
//	go tool pprof -top /tmp/prof/pingpong-1k-50-wsgate-r*.pprof   # the rounds merged
//
// Throughput and latency depend on whatever else the machine runs (the report
// shows that load per measurement); the proxy's CPU time, system calls and
// allocations per message are the figures that stay put.
//
// One process runs a gorilla/websocket echo upstream and the gorilla/websocket
// clients. The proxies run in processes of their own: this binary re-executed
// with the hidden flag -serve-proxy KIND (one proxy, or one Caddy, per
// process), or nginx's master and worker. Their CPU time (utime+stime from
// /proc/PID/stat), RSS (VmRSS from /proc/PID/status) and system calls are
// read from /proc and summed over the proxy's processes; a Go child also
// reports its allocations and live heap (runtime.MemStats) over a line
// protocol on its stdin/stdout. Every timed workload is run against every
// variant in turn (A B C D E, A B C D E, ... for -rounds rounds) and the median
// of the rounds is reported, as absolute figures and as ratios to the raw TCP
// copy proxy measured in the same run. The memory workloads run once per
// variant, each through a proxy process started afresh.
//
// Variants:
//
//	direct        the client talks to the echo upstream itself (no proxy, no proxy CPU)
//	tcp           raw TCP copy proxy: accept, dial, two io.Copy (splice(2) on Linux) — the baseline
//	copy          the same proxy copying through a user-space buffer (-copy-buffer, 32k
//	              like Caddy's reverse_proxy): what moving bytes through user space costs
//	wsgate        proxy.New served by net/http (frame-level inspect and forward)
//	gorilla       message-level proxy: gorilla Upgrade + Dial, ReadMessage→WriteMessage both ways
//	caddy         Caddy's reverse_proxy, in-process in the child, from a JSON config
//	wsgate-caddy  the same Caddy with wsgate's http.handlers.ws (caddymodule)
//	nginx         nginx with one worker (skipped, with a log line, where /usr/sbin/nginx is absent)
//
// With -tls every variant's client leg is TLS (a self-signed ECDSA P-256
// certificate the harness makes); the upstream leg stays plain ws://.
//
// Workloads (names for -workloads):
//
//	pingpong-SIZE-N  N sessions, each sends one SIZE-byte binary message and waits for its echo
//	stream-SIZE      one session writes SIZE-byte messages continuously, a reader goroutine reads the echoes
//	idle             -idle sessions opened and left idle: memory (heap, stacks, RSS, kernel) per proxied session
//	idle-after-SIZE  the same, each session having exchanged one SIZE-byte message first
//	mass-close       -mass-close sessions all closed at once (close frames) while a probe
//	                 session echoes: the proxy's RSS growth and the probe's latency
//	mass-drop        the same, the clients dropping TCP instead (not in the default list)
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
	if opts.child.kind != "" {
		return serveProxyChild(opts.child, os.Stdin, stdout)
	}
	rep, err := runHarness(opts, stderr)
	if err != nil {
		return err
	}
	rep.writeMarkdown(stdout)
	return nil
}
