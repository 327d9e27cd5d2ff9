package main

import (
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"strings"
	"time"
)

// workloadResult is a timed workload's samples.
type workloadResult struct {
	w       workload
	samples map[string][]sample // by variant, one per round
}

// report is everything the markdown shows.
type report struct {
	opts              *options
	nofile, nofileMax uint64
	variants          []string // as run (nginx is left out where not installed)
	tls               []string // per variant: the client leg's TLS session, under -tls
	results           []workloadResult
	idle              []idleRow
	mass              []massRow
	elapsed           time.Duration
}

// median is the median of the non-NaN values (NaN if none).
func median(vs []float64) float64 {
	var xs []float64
	for _, v := range vs {
		if !math.IsNaN(v) {
			xs = append(xs, v)
		}
	}
	if len(xs) == 0 {
		return nan
	}
	slices.Sort(xs)
	if len(xs)%2 == 1 {
		return xs[len(xs)/2]
	}
	return (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
}

// med is the per-figure median of a variant's rounds.
func med(ss []sample) (m sample, spread float64) {
	get := func(f func(sample) float64) float64 {
		vs := make([]float64, len(ss))
		for i, s := range ss {
			vs[i] = f(s)
		}
		return median(vs)
	}
	m = sample{
		msgsPerSec:     get(func(s sample) float64 { return s.msgsPerSec }),
		mbPerSec:       get(func(s sample) float64 { return s.mbPerSec }),
		p50:            get(func(s sample) float64 { return s.p50 }),
		p99:            get(func(s sample) float64 { return s.p99 }),
		cpuPerMsg:      get(func(s sample) float64 { return s.cpuPerMsg }),
		syscallsPerMsg: get(func(s sample) float64 { return s.syscallsPerMsg }),
		allocsPerFrame: get(func(s sample) float64 { return s.allocsPerFrame }),
		bytesPerFrame:  get(func(s sample) float64 { return s.bytesPerFrame }),
		busy:           get(func(s sample) float64 { return s.busy }),
		other:          get(func(s sample) float64 { return s.other }),
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range ss {
		lo, hi = min(lo, s.msgsPerSec), max(hi, s.msgsPerSec)
	}
	if len(ss) > 1 && m.msgsPerSec > 0 {
		spread = (hi - lo) / m.msgsPerSec
	} else {
		spread = nan
	}
	return m, spread
}

// writeMarkdown writes the report: settings, variants, then one section per
// kind of workload that ran.
func (r *report) writeMarkdown(out io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(out, format, args...) }
	r.writeHeader(p)
	if len(r.results) > 0 {
		r.writeTimed(p)
	}
	if len(r.idle) > 0 {
		r.writeIdle(p)
	}
	if len(r.mass) > 0 {
		r.writeMass(p)
	}
}

// printer is fmt.Fprintf to the report.
type printer func(format string, args ...any)

// label is how a variant is named in the tables: with "+tls" under -tls.
func (r *report) label(v string) string {
	if r.opts.tls {
		return v + "+tls"
	}
	return v
}

// writeHeader writes the title, the command, the settings and what each variant is.
func (r *report) writeHeader(p printer) {
	o := r.opts
	p("# wsgate proxy performance\n\n")
	p("Command: `%s`\n\n", strings.TrimSpace("go run ./integration/perf "+strings.Join(o.args, " ")))
	p("Settings: -duration %s (after %s warmup), -rounds %d, -idle %d, -mass-close %d; %s %s/%s, %d CPUs (GOMAXPROCS %d), kernel %s, RLIMIT_NOFILE %d (hard %d). Run took %s.\n\n",
		o.duration, o.warmup, o.rounds, o.idle, o.massClose, runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.GOMAXPROCS(0),
		kernelRelease(), r.nofile, r.nofileMax, r.elapsed.Round(time.Second))
	p("Variants: **direct** = client to the echo upstream, no proxy; **tcp** = raw TCP copy proxy (io.Copy both ways, splice on Linux), the baseline of every ratio; "+
		"**copy** = the same proxy copying through a %s user-space buffer instead of splicing (as Caddy's reverse_proxy does); "+
		"**wsgate** = proxy.New with default config behind net/http; **gorilla** = message-level proxy on gorilla/websocket (ReadMessage→WriteMessage per direction, default buffers); "+
		"**caddy** = Caddy %s's reverse_proxy (JSON config: one HTTP/1.1 server, admin off, automatic HTTPS off, ERROR logs only; it hijacks the upgraded connection and copies bytes both ways with 32 KiB buffers); "+
		"**wsgate-caddy** = the same Caddy with wsgate's http.handlers.ws (caddymodule) as the route's handler; "+
		"**nginx** = nginx (%s) with one worker, proxy_http_version 1.1, Upgrade/Connection headers passed, proxy_buffering off, no access log. "+
		"Clients and upstream are gorilla/websocket, in the harness process; each proxy runs in processes of its own: this binary re-executed with -serve-proxy (one Caddy per process), or nginx's master and worker, whose CPU time, RSS and system calls are summed.\n\n",
		fmtBytes(float64(o.copyBuffer)), caddyVersion(), nginxVersion())
	if !o.tls {
		return
	}
	p("**TLS client leg (-tls)**: every variant terminates TLS from the clients (wss://, a self-signed ECDSA P-256 certificate the harness made; HTTP/1.1) and speaks plain ws:// to the upstream; " +
		"direct's clients reach the echo upstream over TLS too. **tcp+tls** and **copy+tls** terminate TLS with crypto/tls and copy in user space (io.Copy through a 32 KiB buffer, resp. the -copy-buffer): " +
		"nothing can splice, so the baseline of the ratios is a TLS-terminating copy proxy, not splice. Sessions as negotiated: ")
	for i, v := range r.variants {
		if i > 0 {
			p("; ")
		}
		p("%s %s", v, r.tls[i])
	}
	p(".\n\n")
}

// writeTimed writes the throughput, latency and proxy cost table.
func (r *report) writeTimed(p printer) {
	o := r.opts
	p("## Throughput, latency, proxy cost\n\n")
	p("Median of %d rounds; variants interleaved within each round (A B C D, A B C D, ...). In parentheses: ratio to **%s** from the same run.\n\n", o.rounds, r.label(baseline))
	p("| workload | variant | msgs/s | MB/s | p50 RTT | p99 RTT | proxy CPU/msg | r/w syscalls/msg | allocs/frame | B alloc/frame | CPU busy | other load | spread |\n")
	p("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, res := range r.results {
		base, _ := med(res.samples[baseline])
		for _, v := range r.variants {
			ss := res.samples[v]
			if len(ss) == 0 {
				continue
			}
			m, spread := med(ss)
			p("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", res.w.name, r.label(v),
				withRatio(fmtCount(m.msgsPerSec), m.msgsPerSec, base.msgsPerSec, v),
				fmtFloat(m.mbPerSec, 1),
				withRatio(fmtMicros(m.p50), m.p50, base.p50, v),
				withRatio(fmtMicros(m.p99), m.p99, base.p99, v),
				withRatio(fmtMicros(m.cpuPerMsg), m.cpuPerMsg, base.cpuPerMsg, v),
				fmtFloat(m.syscallsPerMsg, 2),
				fmtFloat(m.allocsPerFrame, 2), fmtFloat(m.bytesPerFrame, 0),
				fmtPct(m.busy), fmtPct(m.other), fmtPct(spread))
		}
	}
	p("\nColumns:\n\n")
	p("- **msgs/s**: echoes received by the clients per second, all sessions together (ping-pong: round trips per second). **MB/s**: their payload (10^6 bytes/s, one direction).\n")
	p("- **p50/p99 RTT**: ping-pong round trip, from before the client's write to the last byte of the echo.\n")
	p("- **proxy CPU/msg**: the proxy's utime+stime (/proc/PID/stat, 10 ms ticks; nginx: master + worker) over the interval, divided by the messages it forwarded in both directions (each echo counts twice: up and down).\n")
	p("- **r/w syscalls/msg**: the proxy's read- and write-type system calls (syscr + syscw of /proc/PID/io: read, readv, write, writev, ...) per forwarded message. splice(2), recv(2) and send(2) are not counted there, so the tcp variant's figure is only its few non-splice calls, and nginx (recv/send) has none to show (–).\n")
	p("- **allocs/frame**, **B alloc/frame**: runtime.MemStats.Mallocs and TotalAlloc of the proxy child over the interval, per frame forwarded, counting frames as the client and the upstream sent them "+
		"(a client sends a message in frames of at most %d KiB, the upstream in one frame: a 1 MiB message is 16 frames up and 1 down). Includes the few allocations of the harness's stats requests; – for nginx (not Go).\n", clientWriteBuffer>>10)
	p("- **CPU busy**: CPU of harness (clients + upstream) and proxy together over wall time × %d cores; near 100%% the machine, not the proxy, is the limit and throughput ratios understate the proxy's cost (then compare CPU/msg).\n", runtime.NumCPU())
	p("- **other load**: CPU used by every other process of the machine over the same interval (/proc/stat), same scale: other jobs on a shared machine make throughput and latency noisy; CPU/msg and allocations are the robust figures.\n")
	p("- **spread**: (max − min) / median of msgs/s over the rounds, a noise indicator.\n\n")
	if o.profileDir != "" {
		p("CPU profiles of %s were written to %s during the measurements: those variants' figures include the profiler's overhead.\n\n", strings.Join(o.profileVars, ", "), o.profileDir)
	}
}

// withRatio appends v's ratio to the baseline's figure to s (not on the baseline's own row).
func withRatio(s string, v, base float64, variant string) string {
	if math.IsNaN(v) || math.IsNaN(base) || base == 0 || variant == baseline {
		return s
	}
	return fmt.Sprintf("%s (%.2f×)", s, v/base)
}

// fmtCount formats a count with thousands separators.
func fmtCount(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	s := fmt.Sprintf("%.0f", v)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// fmtFloat formats v with prec decimals (– for NaN).
func fmtFloat(v float64, prec int) string {
	if math.IsNaN(v) {
		return "–"
	}
	return fmt.Sprintf("%.*f", prec, v)
}

// fmtPct formats a fraction as a percentage (– for NaN).
func fmtPct(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return fmt.Sprintf("%.0f%%", 100*v)
}

// fmtMicros formats a duration given in µs.
func fmtMicros(us float64) string {
	switch {
	case math.IsNaN(us):
		return "–"
	case us >= 10000:
		return fmt.Sprintf("%.1f ms", us/1000)
	case us >= 1000:
		return fmt.Sprintf("%.2f ms", us/1000)
	case us >= 10:
		return fmt.Sprintf("%.1f µs", us)
	}
	return fmt.Sprintf("%.2f µs", us)
}

// fmtBytes formats a byte count: B, KiB from 10 KiB, MiB from 10 MiB (– for NaN).
func fmtBytes(b float64) string {
	switch {
	case math.IsNaN(b):
		return "–"
	case math.Abs(b) >= 10<<20:
		return fmt.Sprintf("%.1f MiB", b/(1<<20))
	case math.Abs(b) >= 10<<10:
		return fmt.Sprintf("%.1f KiB", b/1024)
	}
	return fmt.Sprintf("%.0f B", b)
}
