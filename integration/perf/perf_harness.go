package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// child is a proxy child process and its command channel.
type child struct {
	kind string
	cmd  *exec.Cmd
	addr string
	in   io.WriteCloser
	out  *bufio.Reader
	mu   sync.Mutex
}

func startChild(kind, upstream string, copyBuffer int, stderr io.Writer) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "-serve-proxy", kind, "-upstream", upstream, "-copy-buffer", strconv.Itoa(copyBuffer))
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.Stderr = stderr
	childAttrs(cmd)
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{kind: kind, cmd: cmd, in: in, out: bufio.NewReader(outPipe)}
	line, err := c.out.ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "LISTEN ")
	if err != nil || !ok {
		c.stop()
		return nil, fmt.Errorf("proxy child %s did not start: %q %v", kind, line, err)
	}
	c.addr = addr
	return c, nil
}

// call sends one command and decodes the child's JSON answer.
func (c *child) call(cmd string) (childStats, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var st childStats
	if _, err := io.WriteString(c.in, cmd+"\n"); err != nil {
		return st, fmt.Errorf("child %s: %w", c.kind, err)
	}
	line, err := c.out.ReadBytes('\n')
	if err != nil {
		return st, fmt.Errorf("child %s: %w", c.kind, err)
	}
	if err := json.Unmarshal(line, &st); err != nil {
		return st, fmt.Errorf("child %s: %w", c.kind, err)
	}
	if st.Error != "" {
		return st, fmt.Errorf("child %s: %s", c.kind, st.Error)
	}
	return st, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) stop() {
	c.in.Close()
	done := make(chan struct{})
	go func() { c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		c.cmd.Process.Kill()
		<-done
	}
}

// variant is one way for the clients to reach the echo upstream.
type variant struct {
	name  string
	url   string
	child *child // nil for direct
}

type harness struct {
	opts     *options
	log      io.Writer
	echo     *echoUpstream
	variants []*variant
	started  time.Time
	nofile   uint64
	done     int // measurements done, for progress
	total    int
}

// runHarness runs every selected workload against every variant and returns the report.
func runHarness(opts *options, log io.Writer) (*report, error) {
	log = &syncWriter{w: log} // shared with the children's stderr
	cur, hard := raiseNofile()
	h := &harness{opts: opts, log: log, started: time.Now(), nofile: cur}
	if opts.profileDir != "" {
		if err := os.MkdirAll(opts.profileDir, 0o755); err != nil {
			return nil, err
		}
	}
	echo, err := startEcho()
	if err != nil {
		return nil, err
	}
	h.echo = echo
	defer echo.close()
	h.logf("echo upstream on %s (harness pid %d)", echo.addr, os.Getpid())
	for _, name := range opts.variants {
		v := &variant{name: name, url: "ws://" + echo.addr + "/echo"}
		if name != "direct" {
			c, err := startChild(name, echo.addr, opts.copyBuffer, log)
			if err != nil {
				return nil, err
			}
			defer c.stop()
			v.child, v.url = c, "ws://"+c.addr+"/echo"
			h.logf("proxy child %-8s pid %d listening on %s", name, c.pid(), c.addr)
		}
		h.variants = append(h.variants, v)
	}

	rep := &report{opts: opts, nofile: cur, nofileMax: hard, variants: opts.variants}
	timed := 0
	for _, w := range opts.workloads {
		if w.kind != kindIdle {
			timed++
		}
	}
	h.total = timed * opts.rounds * len(h.variants)
	est := time.Duration(h.total) * (opts.duration + opts.warmup + 150*time.Millisecond)
	h.logf("%d workloads × %d variants × %d rounds = %d timed measurements, about %s; RLIMIT_NOFILE %d (hard %d)",
		len(opts.workloads), len(h.variants), opts.rounds, h.total, est.Round(time.Second), cur, hard)

	for _, w := range opts.workloads {
		if w.kind == kindIdle {
			ir, err := h.runIdle(opts.idle)
			if err != nil {
				return nil, fmt.Errorf("idle: %w", err)
			}
			rep.idle = ir
			continue
		}
		res := workloadResult{w: w, samples: map[string][]sample{}}
		for r := 1; r <= opts.rounds; r++ {
			for _, v := range h.variants {
				s, err := h.measure(w, v, r)
				if err != nil {
					return nil, fmt.Errorf("%s, %s, round %d: %w", w.name, v.name, r, err)
				}
				res.samples[v.name] = append(res.samples[v.name], s)
				h.done++
				h.logf("[%d/%d] %-16s round %d %-8s %s", h.done, h.total, w.name, r, v.name, s.brief())
			}
		}
		rep.results = append(rep.results, res)
	}
	rep.elapsed = time.Since(h.started)
	return rep, nil
}

func (h *harness) logf(format string, args ...any) {
	fmt.Fprintf(h.log, "%6.1fs  %s\n", time.Since(h.started).Seconds(), fmt.Sprintf(format, args...))
}

// snapshot is the state of the counters at one end of a measurement interval.
type snapshot struct {
	t        time.Time
	selfCPU  time.Duration
	childCPU time.Duration
	machine  time.Duration // CPU of every process on the machine
	mallocs  uint64
	bytes    uint64
	syscalls uint64 // the child's read/write system calls
}

func (h *harness) snap(v *variant) (snapshot, error) {
	s := snapshot{t: time.Now()}
	s.selfCPU, _ = procCPU(os.Getpid())
	s.machine = machineBusy()
	if v.child != nil {
		st, err := v.child.call("stats")
		if err != nil {
			return s, err
		}
		s.mallocs, s.bytes = st.Mallocs, st.TotalAlloc
		if s.childCPU, err = procCPU(v.child.pid()); err != nil {
			return s, err
		}
		s.syscalls, _ = procSyscalls(v.child.pid())
	}
	return s, nil
}

// profiling reports whether measurements of v are profiled, and where to.
func (h *harness) profilePath(w workload, v *variant, round int) string {
	if h.opts.profileDir == "" || v.child == nil || !slices.Contains(h.opts.profileVars, v.name) {
		return ""
	}
	return filepath.Join(h.opts.profileDir, fmt.Sprintf("%s-%s-r%d.pprof", w.name, v.name, round))
}

// waitQuiet waits until the proxy and the upstream have no sessions left.
func (h *harness) waitQuiet(v *variant, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		var active int64
		if v.child != nil {
			st, err := v.child.call("stats")
			if err != nil {
				return err
			}
			active = st.Active
		}
		up := h.echo.active.Load()
		if active == 0 && up == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d proxy and %d upstream sessions still open %s after the clients closed", active, up, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
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

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
