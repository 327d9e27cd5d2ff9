package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"time"
)

// variant is one way for the clients to reach the echo upstream.
type variant struct {
	name string
	url  string
	proc *proxyProc // nil for direct
	tls  string     // the client leg's TLS session as negotiated (-tls), for the report
}

// harness runs the workloads: the echo upstream, the proxies, the progress log.
type harness struct {
	opts     *options
	log      io.Writer
	echo     *echoUpstream
	variants []*variant
	dir      string      // temp dir: certificate, nginx configs, Caddy storage
	cert     *serverCert // the client leg's certificate under -tls
	started  time.Time
	nofile   uint64
	done     int // timed measurements done, for progress
	total    int
}

// runHarness runs every selected workload against every variant and returns the report.
func runHarness(opts *options, log io.Writer) (*report, error) {
	log = &syncWriter{w: log} // shared with the children's stderr
	cur, hard := raiseNofile()
	h := &harness{opts: opts, log: log, started: time.Now(), nofile: cur}
	defer h.teardown()
	if err := h.setup(); err != nil {
		return nil, err
	}
	rep := &report{opts: opts, nofile: cur, nofileMax: hard}
	for _, v := range h.variants {
		rep.variants = append(rep.variants, v.name)
		rep.tls = append(rep.tls, v.tls)
	}
	h.logPlan(hard)
	for _, w := range opts.workloads {
		var err error
		switch w.kind {
		case kindIdle:
			var rows []idleRow
			rows, err = h.runIdle(w)
			rep.idle = append(rep.idle, rows...)
		case kindMassClose:
			var rows []massRow
			rows, err = h.runMassClose(w)
			rep.mass = append(rep.mass, rows...)
		default:
			var res workloadResult
			res, err = h.runTimed(w)
			rep.results = append(rep.results, res)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", w.name, err)
		}
	}
	rep.elapsed = time.Since(h.started)
	return rep, nil
}

// setup makes the temp dir (and certificate), starts the echo upstream and
// one proxy per variant, and checks each variant with one echo.
func (h *harness) setup() error {
	var err error
	if h.opts.profileDir != "" {
		if err := os.MkdirAll(h.opts.profileDir, 0o755); err != nil {
			return err
		}
	}
	if h.dir, err = os.MkdirTemp("", "wsgate-perf-"); err != nil {
		return err
	}
	if h.opts.tls {
		if h.cert, err = newServerCert(h.dir); err != nil {
			return fmt.Errorf("TLS certificate: %w", err)
		}
	}
	if h.echo, err = startEcho(h.cert); err != nil {
		return fmt.Errorf("echo upstream: %w", err)
	}
	h.logf("echo upstream on %s (harness pid %d)", h.echo.addr, os.Getpid())
	for _, name := range h.opts.variants {
		if name == "nginx" && !nginxInstalled() {
			h.logf("nginx: %s not found, the nginx variant is skipped (apt-get install -y nginx-light)", nginxPath)
			continue
		}
		v := &variant{name: name, url: h.url(h.echo.clientAddr())}
		h.variants = append(h.variants, v)
		if err := h.startProxy(v); err != nil {
			return err
		}
	}
	return nil
}

// teardown stops every proxy and the upstream and removes the temp dir.
func (h *harness) teardown() {
	for _, v := range h.variants {
		if v.proc != nil {
			v.proc.stop()
		}
	}
	if h.echo != nil {
		h.echo.close()
	}
	if h.dir != "" {
		os.RemoveAll(h.dir)
	}
}

// logPlan logs what the run will do and roughly how long the timed part takes.
func (h *harness) logPlan(hardNofile uint64) {
	timed := 0
	for _, w := range h.opts.workloads {
		if !w.memory() {
			timed++
		}
	}
	h.total = timed * h.opts.rounds * len(h.variants)
	est := time.Duration(h.total) * (h.opts.duration + h.opts.warmup + 150*time.Millisecond)
	h.logf("%d workloads × %d variants; %d timed measurements (× %d rounds) take about %s; RLIMIT_NOFILE %d (hard %d)",
		len(h.opts.workloads), len(h.variants), h.total, h.opts.rounds, est.Round(time.Second), h.nofile, hardNofile)
}

// url is the clients' URL for a server on addr: wss:// under -tls.
func (h *harness) url(addr string) string {
	if h.cert != nil {
		return "wss://" + addr + "/echo"
	}
	return "ws://" + addr + "/echo"
}

// startProxy starts v's proxy process (none for direct) and checks the
// variant with one echo.
func (h *harness) startProxy(v *variant) error {
	if v.name != "direct" {
		p, err := h.newProxy(v.name)
		if err != nil {
			return fmt.Errorf("starting %s: %w", v.name, err)
		}
		v.proc, v.url = p, h.url(p.addr)
		h.logf("proxy %-12s pids %v listening on %s", v.name, p.pids, p.addr)
	}
	if err := h.check(v); err != nil {
		return fmt.Errorf("%s does not echo: %w", v.name, err)
	}
	return nil
}

// newProxy starts a proxy process of kind in front of the echo upstream.
func (h *harness) newProxy(kind string) (*proxyProc, error) {
	var certFile, keyFile string
	if h.cert != nil {
		certFile, keyFile = h.cert.certFile, h.cert.keyFile
	}
	if kind == "nginx" {
		// Two connections per session, and room to spare: nginx closes
		// connections still waiting for their request ("reusing
		// connections") once fewer than 1/16 of worker_connections are free.
		conns := 4*max(h.opts.idle, h.opts.massClose, 1000) + 1024
		if h.nofile > 0 {
			conns = min(conns, int(h.nofile)-64)
		}
		s := nginxSetup{Upstream: h.echo.addr, CertFile: certFile, KeyFile: keyFile, Connections: conns, Nofile: int(h.nofile)}
		return startNginx(s, h.dir, h.log)
	}
	cfg := childConfig{kind: kind, upstream: h.echo.addr, copyBuffer: h.opts.copyBuffer,
		certFile: certFile, keyFile: keyFile, workDir: h.dir}
	return startGoChild(cfg, h.log)
}

// restart replaces v's proxy with a new process, so that a memory measurement
// starts from a proxy that earlier workloads have not grown.
func (h *harness) restart(v *variant) error {
	if v.proc == nil {
		return nil
	}
	v.proc.stop()
	v.proc = nil
	return h.startProxy(v)
}

// check sends one message through v and waits for its echo, recording the
// TLS session the client leg negotiated.
func (h *harness) check(v *variant) error {
	conns, err := dialAll(v.url, 1, 1)
	if err != nil {
		return err
	}
	c := conns[0]
	if err := echoOne(c, []byte("wsgate perf check")); err != nil {
		c.Close()
		return err
	}
	v.tls = tlsSummary(c)
	closeGracefully(c)
	return h.waitQuiet(v, 10*time.Second)
}

// logf writes one progress line, with the time since the start.
func (h *harness) logf(format string, args ...any) {
	fmt.Fprintf(h.log, "%6.1fs  %s\n", time.Since(h.started).Seconds(), fmt.Sprintf(format, args...))
}

// snapshot is the state of the counters at one end of a measurement interval.
type snapshot struct {
	t         time.Time
	selfCPU   time.Duration
	machine   time.Duration // CPU of every process on the machine
	proxy     bool          // the variant has a proxy: the fields below are set
	goRuntime bool          // the proxy is a Go child: mallocs and bytes are set
	proxyCPU  time.Duration
	mallocs   uint64
	bytes     uint64
	syscalls  uint64 // the proxy's read/write system calls
}

// snap reads the counters of the harness, the machine and v's proxy.
func (h *harness) snap(v *variant) (snapshot, error) {
	s := snapshot{t: time.Now()}
	s.selfCPU, _ = procCPU(os.Getpid())
	s.machine = machineBusy()
	p := v.proc
	if p == nil {
		return s, nil
	}
	s.proxy = true
	if p.ctl != nil {
		st, err := p.ctl.call("stats")
		if err != nil {
			return s, err
		}
		s.goRuntime, s.mallocs, s.bytes = true, st.Mallocs, st.TotalAlloc
	}
	var err error
	if s.proxyCPU, err = p.cpu(); err != nil {
		return s, err
	}
	s.syscalls = p.syscalls()
	return s, nil
}

// profilePath is where a CPU profile of this measurement goes ("" if v is not profiled).
func (h *harness) profilePath(w workload, v *variant, round int) string {
	if h.opts.profileDir == "" || v.proc == nil || v.proc.ctl == nil || !slices.Contains(h.opts.profileVars, v.name) {
		return ""
	}
	return filepath.Join(h.opts.profileDir, fmt.Sprintf("%s-%s-r%d.pprof", w.name, v.name, round))
}

// sessions is the number of sessions open at v's proxy (the upstream's count
// for direct) and at the upstream.
func (h *harness) sessions(v *variant) (proxied, upstream int64, err error) {
	upstream = h.echo.active.Load()
	if v.proc == nil {
		return upstream, upstream, nil
	}
	proxied, err = v.proc.active()
	return proxied, upstream, err
}

// waitSessions waits until the proxy and the upstream both have want sessions.
func (h *harness) waitSessions(v *variant, want int64, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		proxied, up, err := h.sessions(v)
		if err != nil {
			return err
		}
		if proxied == want && up == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d proxy and %d upstream sessions open %s later, want %d", proxied, up, limit, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitQuiet waits until the proxy and the upstream have no sessions left.
func (h *harness) waitQuiet(v *variant, limit time.Duration) error {
	return h.waitSessions(v, 0, limit)
}

// heapAndStack is the live heap plus goroutine stacks of this process after GC.
func heapAndStack() (heap, stack uint64) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc, ms.StackInuse
}

// syncWriter serialises writes to w.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

// Write writes p to w, one writer at a time.
func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
