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
	profileDir  string
	profileVars []string
	copyBuffer  int

	// Child mode (hidden).
	serveProxy string
	upstream   string
}

// variantNames are the variants in the order they run within a round.
var variantNames = []string{"direct", "tcp", "copy", "wsgate", "gorilla"}

// baseline is the variant the ratios are computed against.
const baseline = "tcp"

type workloadKind int

const (
	kindPingPong workloadKind = iota
	kindStream
	kindIdle
)

type workload struct {
	name     string
	kind     workloadKind
	size     int // message size
	sessions int
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("perf", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &options{args: args}
	fs.DurationVar(&o.duration, "duration", 2*time.Second, "length of one measurement (one variant, one round)")
	fs.DurationVar(&o.warmup, "warmup", 0, "traffic before each measurement starts (default: duration/10, between 50ms and 250ms)")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds; each round runs every variant once per workload, the median is reported")
	workloads := fs.String("workloads", "", "comma list of workloads (default: all); see -h for names")
	sessions := fs.String("sessions", "1,50", "concurrent sessions of the ping-pong workloads (comma list)")
	sizes := fs.String("sizes", "128,1k,16k", "message sizes of the ping-pong workloads (comma list; k = KiB, m = MiB)")
	streams := fs.String("stream-sizes", "64k,1m", "message sizes of the stream workloads (comma list)")
	variants := fs.String("variants", strings.Join(variantNames, ","), "comma list of variants to run (tcp, the baseline, is always run)")
	fs.IntVar(&o.idle, "idle", 5000, "sessions of the idle workload (capped by RLIMIT_NOFILE)")
	fs.StringVar(&o.profileDir, "profile", "", "write a CPU profile of the proxy child for each measurement (and a heap profile with the idle sessions open) into this directory; "+
		"run with GODEBUG=memprofilerate=1 for an exact heap profile")
	profVars := fs.String("profile-variants", "wsgate", "variants profiled with -profile (comma list)")
	copyBuf := fs.String("copy-buffer", "32k", "buffer of the copy variant's user-space copy (Caddy's reverse_proxy uses 32k)")
	fs.StringVar(&o.serveProxy, "serve-proxy", "", "internal: run as the proxy child of this kind (tcp, copy, wsgate, gorilla)")
	fs.StringVar(&o.upstream, "upstream", "", "internal: the echo upstream's host:port, for -serve-proxy")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: go run ./integration/perf [flags]\n\n"+
			"workloads: pingpong-SIZE-N for each -sizes and -sessions (e.g. pingpong-1k-50),\n"+
			"           stream-SIZE for each -stream-sizes (e.g. stream-64k), idle\n"+
			"variants:  direct (no proxy), tcp (raw TCP copy, baseline), copy (user-space TCP copy),\n           wsgate, gorilla (message-level)\n\nflags:\n")
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
	if o.serveProxy != "" {
		return o, nil
	}
	if o.duration <= 0 || o.rounds <= 0 || o.idle < 0 {
		return nil, fmt.Errorf("-duration and -rounds must be positive, -idle not negative")
	}
	if o.warmup <= 0 {
		o.warmup = min(max(o.duration/10, 50*time.Millisecond), 250*time.Millisecond)
	}

	var all []workload
	szs, err := parseSizes(*sizes)
	if err != nil {
		return nil, fmt.Errorf("-sizes: %w", err)
	}
	var ns []int
	for _, s := range splitList(*sessions) {
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
	stszs, err := parseSizes(*streams)
	if err != nil {
		return nil, fmt.Errorf("-stream-sizes: %w", err)
	}
	for _, sz := range stszs {
		all = append(all, workload{name: "stream-" + sizeName(sz), kind: kindStream, size: sz, sessions: 1})
	}
	all = append(all, workload{name: "idle", kind: kindIdle})
	if *workloads == "" {
		o.workloads = all
	} else {
		for _, name := range splitList(*workloads) {
			i := slices.IndexFunc(all, func(w workload) bool { return w.name == name })
			if i < 0 {
				w, ok := parseWorkloadName(name)
				if !ok {
					return nil, fmt.Errorf("-workloads: unknown workload %q", name)
				}
				o.workloads = append(o.workloads, w)
				continue
			}
			o.workloads = append(o.workloads, all[i])
		}
	}

	for _, v := range splitList(*variants) {
		if !slices.Contains(variantNames, v) {
			return nil, fmt.Errorf("-variants: unknown variant %q", v)
		}
	}
	want := splitList(*variants)
	for _, v := range variantNames { // canonical order; the baseline is always measured
		if v == baseline || slices.Contains(want, v) {
			o.variants = append(o.variants, v)
		}
	}
	o.profileVars = splitList(*profVars)
	return o, nil
}

// parseWorkloadName accepts any pingpong-SIZE-N or stream-SIZE, beyond the flag-built list.
func parseWorkloadName(name string) (workload, bool) {
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

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

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

func sizeName(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.Itoa(n>>20) + "m"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.Itoa(n>>10) + "k"
	}
	return strconv.Itoa(n)
}
