package main

import (
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
)

// options are the harness's flags.
type options struct {
	args        []string // as given, for the report
	duration    time.Duration
	warmup      time.Duration
	rounds      int
	workloads   []workload
	variants    []string
	idle        int
	massClose   int
	tls         bool
	profileDir  string
	profileVars []string
	copyBuffer  int

	child childConfig // child mode (hidden flags): child.kind is set
}

// variantNames are the variants in the order they run within a round.
var variantNames = []string{"direct", "tcp", "copy", "wsgate", "gorilla", "caddy", "wsgate-caddy", "nginx"}

// baseline is the variant the ratios are computed against.
const baseline = "tcp"

// workloadKind is what a workload does with its sessions.
type workloadKind int

const (
	kindPingPong  workloadKind = iota // each session: send a message, wait for its echo, again
	kindStream                        // one session writes continuously, a reader reads the echoes
	kindIdle                          // sessions opened (one message each if size > 0), then left idle
	kindMassClose                     // sessions opened, then all closed at once while a probe session echoes
)

// workload is one entry of -workloads.
type workload struct {
	name     string
	kind     workloadKind
	size     int // message size (idle: the one message each session exchanges first; 0 for none)
	sessions int
	drop     bool // kindMassClose: the clients drop TCP instead of sending a close frame
}

// memory reports whether w measures memory (with a fresh proxy process) rather than time.
func (w workload) memory() bool { return w.kind == kindIdle || w.kind == kindMassClose }

// usage is the -h text before the flags.
const usage = `usage: go run ./integration/perf [flags]

workloads (-workloads, comma list; default: all but mass-drop):
  pingpong-SIZE-N   N sessions, each sends one SIZE-byte message and waits for its echo,
                    for each -sizes and -sessions (e.g. pingpong-1k-50; any SIZE and N work)
  stream-SIZE       one session writes SIZE-byte messages continuously (e.g. stream-64k)
  idle              -idle sessions opened, nothing sent: memory per idle session
  idle-after-SIZE   the same, but each session first exchanges one SIZE-byte message
                    (default list: idle-after-1k, idle-after-16k): what a session keeps
                    once it has been used
  mass-close        -mass-close sessions closed at once (a close frame each, at one
                    barrier) while a probe session echoes 128 B every 5 ms: the proxy's
                    RSS growth and the probe's latency during the storm
  mass-drop         the same, but the clients drop their TCP connections (no close frame)

variants (-variants, comma list; tcp, the baseline, always runs):
  direct        no proxy: the clients talk to the echo upstream
  tcp           raw TCP copy proxy, io.Copy both ways (splice on Linux) -- the baseline
  copy          the same copying through a user-space buffer (-copy-buffer)
  wsgate        proxy.New served by net/http
  gorilla       message-level proxy on gorilla/websocket
  caddy         Caddy's reverse_proxy (in a child process, JSON config)
  wsgate-caddy  Caddy with wsgate's http.handlers.ws (caddymodule)
  nginx         nginx, one worker (needs /usr/sbin/nginx: apt-get install nginx-light;
                skipped with a log line when absent)

-tls gives every variant a TLS client leg (self-signed ECDSA P-256, wss://); the
upstream leg stays ws://. tcp and copy then terminate TLS with crypto/tls and copy
in user space (nothing can splice).

The default run (every workload and variant) takes about 8 minutes on 2 cores;
a subset runs quicker, e.g.:
  go run ./integration/perf -workloads pingpong-1k-50,stream-64k -variants wsgate,caddy,nginx
  go run ./integration/perf -workloads idle,idle-after-16k -idle 5000 -tls
  go run ./integration/perf -workloads mass-close,mass-drop -mass-close 2000

flags:
`

// parseFlags parses the harness's (or a child's) command line.
func parseFlags(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("perf", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &options{args: args}
	fs.DurationVar(&o.duration, "duration", 1500*time.Millisecond, "length of one measurement (one variant, one round)")
	fs.DurationVar(&o.warmup, "warmup", 0, "traffic before each measurement starts (default: duration/10, between 50ms and 250ms)")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds; each round runs every variant once per workload, the median is reported")
	workloads := fs.String("workloads", "", "comma list of workloads (default: all but mass-drop); see above")
	sessions := fs.String("sessions", "1,50", "concurrent sessions of the ping-pong workloads (comma list)")
	sizes := fs.String("sizes", "128,1k,16k", "message sizes of the ping-pong workloads (comma list; k = KiB, m = MiB)")
	streams := fs.String("stream-sizes", "64k,1m", "message sizes of the stream workloads (comma list)")
	variants := fs.String("variants", strings.Join(variantNames, ","), "comma list of variants to run (tcp, the baseline, is always run; nginx only where installed)")
	fs.IntVar(&o.idle, "idle", 2000, "sessions of the idle and idle-after-SIZE workloads (capped by RLIMIT_NOFILE)")
	fs.IntVar(&o.massClose, "mass-close", 5000, "sessions of the mass-close and mass-drop workloads (capped by RLIMIT_NOFILE)")
	fs.BoolVar(&o.tls, "tls", false, "TLS on the client leg of every variant (wss://, self-signed certificate made by the harness)")
	fs.StringVar(&o.profileDir, "profile", "", "write a CPU profile of the proxy child for each measurement (and a heap profile with the idle sessions open) into this directory; "+
		"run with GODEBUG=memprofilerate=1 for an exact heap profile")
	profVars := fs.String("profile-variants", "wsgate", "variants profiled with -profile (comma list; Go children only)")
	copyBuf := fs.String("copy-buffer", "32k", "buffer of the copy variant's user-space copy (Caddy's reverse_proxy uses 32k)")
	fs.StringVar(&o.child.kind, "serve-proxy", "", "internal: run as the proxy child of this kind ("+strings.Join(childKinds, ", ")+")")
	fs.StringVar(&o.child.upstream, "upstream", "", "internal: the echo upstream's host:port, for -serve-proxy")
	fs.StringVar(&o.child.certFile, "tls-cert", "", "internal: the child's TLS certificate (PEM), for -serve-proxy")
	fs.StringVar(&o.child.keyFile, "tls-key", "", "internal: the child's TLS key (PEM), for -serve-proxy")
	fs.StringVar(&o.child.workDir, "work-dir", "", "internal: a directory the child may write, for -serve-proxy")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	var err error
	if o.copyBuffer, err = parseSize(*copyBuf); err != nil || o.copyBuffer <= 0 {
		return nil, fmt.Errorf("-copy-buffer: %q is not a size", *copyBuf)
	}
	o.child.copyBuffer = o.copyBuffer
	if o.child.kind != "" {
		return o, nil
	}
	if o.duration <= 0 || o.rounds <= 0 || o.idle <= 0 || o.massClose <= 0 {
		return nil, fmt.Errorf("-duration, -rounds, -idle and -mass-close must be positive")
	}
	if o.warmup <= 0 {
		o.warmup = min(max(o.duration/10, 50*time.Millisecond), 250*time.Millisecond)
	}
	all, err := defaultWorkloads(*sizes, *sessions, *streams)
	if err != nil {
		return nil, err
	}
	if o.workloads, err = selectWorkloads(all, *workloads); err != nil {
		return nil, err
	}
	if o.variants, err = selectVariants(*variants); err != nil {
		return nil, err
	}
	o.profileVars = splitList(*profVars)
	return o, nil
}

// defaultWorkloads is the list -workloads chooses from by default: the
// ping-pong and stream workloads the size flags make, then the memory ones.
func defaultWorkloads(sizes, sessions, streams string) ([]workload, error) {
	var all []workload
	szs, err := parseSizes(sizes)
	if err != nil {
		return nil, fmt.Errorf("-sizes: %w", err)
	}
	var ns []int
	for _, s := range splitList(sessions) {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("-sessions: bad count %q", s)
		}
		ns = append(ns, n)
	}
	for _, sz := range szs {
		for _, n := range ns {
			all = append(all, workload{name: fmt.Sprintf("pingpong-%s-%d", sizeName(sz), n), kind: kindPingPong, size: sz, sessions: n})
		}
	}
	stszs, err := parseSizes(streams)
	if err != nil {
		return nil, fmt.Errorf("-stream-sizes: %w", err)
	}
	for _, sz := range stszs {
		all = append(all, workload{name: "stream-" + sizeName(sz), kind: kindStream, size: sz, sessions: 1})
	}
	for _, name := range []string{"idle", "idle-after-1k", "idle-after-16k", "mass-close"} {
		w, _ := parseWorkloadName(name)
		all = append(all, w)
	}
	return all, nil
}

// selectWorkloads picks the named workloads (all if list is empty).
func selectWorkloads(all []workload, list string) ([]workload, error) {
	if list == "" {
		return all, nil
	}
	var out []workload
	for _, name := range splitList(list) {
		if i := slices.IndexFunc(all, func(w workload) bool { return w.name == name }); i >= 0 {
			out = append(out, all[i])
			continue
		}
		w, ok := parseWorkloadName(name)
		if !ok {
			return nil, fmt.Errorf("-workloads: unknown workload %q", name)
		}
		out = append(out, w)
	}
	return out, nil
}

// selectVariants checks the -variants list and puts it in canonical order,
// with the baseline added.
func selectVariants(list string) ([]string, error) {
	want := splitList(list)
	for _, v := range want {
		if !slices.Contains(variantNames, v) {
			return nil, fmt.Errorf("-variants: unknown variant %q", v)
		}
	}
	var out []string
	for _, v := range variantNames {
		if v == baseline || slices.Contains(want, v) {
			out = append(out, v)
		}
	}
	return out, nil
}

// parseWorkloadName accepts any pingpong-SIZE-N, stream-SIZE, idle,
// idle-after-SIZE, mass-close or mass-drop, beyond the flag-built list.
func parseWorkloadName(name string) (workload, bool) {
	switch name {
	case "idle":
		return workload{name: name, kind: kindIdle}, true
	case "mass-close", "mass-drop":
		return workload{name: name, kind: kindMassClose, drop: name == "mass-drop"}, true
	}
	if rest, ok := strings.CutPrefix(name, "idle-after-"); ok {
		sz, err := parseSize(rest)
		return workload{name: name, kind: kindIdle, size: sz}, err == nil
	}
	parts := strings.Split(name, "-")
	switch {
	case len(parts) == 3 && parts[0] == "pingpong":
		sz, err1 := parseSize(parts[1])
		n, err2 := strconv.Atoi(parts[2])
		if err1 != nil || err2 != nil || n <= 0 {
			return workload{}, false
		}
		return workload{name: name, kind: kindPingPong, size: sz, sessions: n}, true
	case len(parts) == 2 && parts[0] == "stream":
		sz, err := parseSize(parts[1])
		if err != nil {
			return workload{}, false
		}
		return workload{name: name, kind: kindStream, size: sz, sessions: 1}, true
	}
	return workload{}, false
}

// splitList splits a comma list, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// parseSizes parses a comma list of sizes.
func parseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range splitList(s) {
		n, err := parseSize(f)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

// parseSize parses a size: a byte count, k = KiB, m = MiB (at most 64 MiB).
func parseSize(s string) (int, error) {
	mult := 1
	switch {
	case strings.HasSuffix(s, "k"):
		mult, s = 1<<10, strings.TrimSuffix(s, "k")
	case strings.HasSuffix(s, "m"):
		mult, s = 1<<20, strings.TrimSuffix(s, "m")
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 || n*mult > 64<<20 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

// sizeName is n as parseSize reads it: 1k, 64k, 1m, 128.
func sizeName(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.Itoa(n>>20) + "m"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.Itoa(n>>10) + "k"
	}
	return strconv.Itoa(n)
}
