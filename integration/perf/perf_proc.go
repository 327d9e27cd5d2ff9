package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proxyProc is one running proxy: a Go child (this binary re-executed with
// -serve-proxy) or nginx's master with its worker. Its CPU time, RSS, system
// calls and descriptors are those of all its processes together.
type proxyProc struct {
	kind string
	addr string
	cmd  *exec.Cmd
	pids []int     // every process of the proxy (nginx: master, then worker)
	ctl  *childCtl // a Go child's command channel; nil for nginx, which has no Go runtime to ask
	fds0 int       // descriptors of pids once listening, before any session
	dir  string    // removed when the proxy stops, if set
	// logFile is the proxy's own log (nginx's error.log), quoted on failures.
	logFile string

	exited    chan struct{} // closed when cmd has been waited for
	watchOnce sync.Once
}

// childCtl is a Go child's command channel: a command per line on its stdin,
// a JSON childStats per line on its stdout.
type childCtl struct {
	kind string
	in   io.WriteCloser
	out  *bufio.Reader
	mu   sync.Mutex
}

// startGoChild starts this binary as the proxy child cfg describes and waits
// for the address it listens on.
func startGoChild(cfg childConfig, stderr io.Writer) (*proxyProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, cfg.args()...)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	if _, set := os.LookupEnv("GORACE"); !set {
		// A -race build sleeps 1 s at exit by default: every restart would wait for it.
		cmd.Env = append(cmd.Env, "GORACE=atexit_sleep_ms=0")
	}
	cmd.Stderr = stderr
	childAttrs(cmd, syscall.SIGKILL)
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the %s child: %w", cfg.kind, err)
	}
	ctl := &childCtl{kind: cfg.kind, in: in, out: bufio.NewReader(outPipe)}
	p := &proxyProc{kind: cfg.kind, cmd: cmd, pids: []int{cmd.Process.Pid}, ctl: ctl, exited: make(chan struct{})}
	line, err := ctl.out.ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "LISTEN ")
	if err != nil || !ok {
		p.stop()
		return nil, fmt.Errorf("proxy child %s did not start: %q %v", cfg.kind, line, err)
	}
	p.addr = addr
	p.fds0 = p.fds()
	return p, nil
}

// call sends one command and decodes the child's JSON answer.
func (c *childCtl) call(cmd string) (childStats, error) {
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

// watch starts waiting for the process (once); exited is closed when it ends.
// A Go child is waited for only once it is told to stop, since Wait closes
// the stdout pipe its answers are read from.
func (p *proxyProc) watch() {
	p.watchOnce.Do(func() {
		go func() {
			p.cmd.Wait()
			close(p.exited)
		}()
	})
}

// stop ends the proxy: a Go child by closing its stdin, nginx by SIGTERM (fast
// shutdown: the master stops its worker), every process killed after 5 s.
func (p *proxyProc) stop() {
	if p.ctl != nil {
		p.ctl.in.Close()
	} else {
		p.cmd.Process.Signal(syscall.SIGTERM)
	}
	p.watch()
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		for _, pid := range p.pids {
			if proc, err := os.FindProcess(pid); err == nil {
				proc.Kill()
			}
		}
		<-p.exited
	}
	if p.dir != "" {
		os.RemoveAll(p.dir)
	}
}

// logTail is the end of the proxy's own log file (nginx's error.log), to
// explain a failure; "" if it has none.
func (p *proxyProc) logTail() string {
	if p == nil || p.logFile == "" {
		return ""
	}
	b, _ := os.ReadFile(p.logFile)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	if len(b) == 0 {
		return ""
	}
	return "\n" + p.kind + " log (" + p.logFile + "):\n" + strings.TrimSpace(string(b))
}

// cpu is the user+system CPU time of the proxy's processes.
func (p *proxyProc) cpu() (time.Duration, error) {
	var total time.Duration
	for _, pid := range p.pids {
		d, err := procCPU(pid)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", p.kind, err)
		}
		total += d
	}
	return total, nil
}

// statusSum sums a kB field of /proc/PID/status (VmRSS, VmHWM) over the
// proxy's processes, in bytes; 0 if unreadable.
func (p *proxyProc) statusSum(field string) uint64 {
	var total uint64
	for _, pid := range p.pids {
		v, _ := procStatusBytes(pid, field)
		total += v
	}
	return total
}

// rss is VmRSS summed over the proxy's processes, as the OS sees it now.
func (p *proxyProc) rss() uint64 { return p.statusSum("VmRSS") }

// resetPeak starts a new VmHWM period for every process of the proxy.
func (p *proxyProc) resetPeak() bool {
	ok := true
	for _, pid := range p.pids {
		ok = resetPeakRSS(pid) && ok
	}
	return ok
}

// syscalls is the proxy's read- and write-type system calls so far.
func (p *proxyProc) syscalls() uint64 {
	var total uint64
	for _, pid := range p.pids {
		n, _ := procSyscalls(pid)
		total += n
	}
	return total
}

// fds is the number of descriptors the proxy's processes hold.
func (p *proxyProc) fds() int {
	total := 0
	for _, pid := range p.pids {
		total += max(fdCount(pid), 0)
	}
	return total
}

// active is the proxy's count of open sessions. A proxy that does not count
// them (Caddy, nginx) holds two descriptors per session, one per leg: the
// estimate is half the descriptors opened since it started listening,
// rounded up so that a half-open session still counts.
func (p *proxyProc) active() (int64, error) {
	if p.ctl != nil {
		st, err := p.ctl.call("stats")
		if err != nil {
			return 0, err
		}
		if st.Active >= 0 {
			return st.Active, nil
		}
	}
	return int64(max(p.fds()-p.fds0, 0)+1) / 2, nil
}

// freeLoopbackAddr returns a 127.0.0.1 address whose port was free a moment
// ago, for a server that must be told its port (Caddy, nginx).
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
