package main

// The driver against ../fakesuite/fuzzingserver.py: the Autobahn TestSuite's
// permessage-deflate cases 12.* and 13.* reproduced with Autobahn|Python
// (Debian's python3-autobahn), run once per -deflate value. The verdicts come
// from that server's report, written by /updateReports as the suite writes its
// index.json.

import (
	"bufio"
	"context"
	"encoding/json"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/internal/testkit"
)

// fakeSuiteScript is the stand-in fuzzing server, relative to this package.
var fakeSuiteScript = filepath.Join("..", "fakesuite", "fuzzingserver.py")

// autobahnPython returns a Python 3 that imports Autobahn|Python on Twisted:
// $AUTOBAHN_PYTHON when set, else Debian's /usr/bin/python3, else python3 on
// the PATH (which may be a separate installation without Debian's packages).
func autobahnPython(t *testing.T) string {
	t.Helper()
	candidates := []string{os.Getenv("AUTOBAHN_PYTHON")}
	if candidates[0] == "" {
		candidates = []string{"/usr/bin/python3"}
		if p, err := exec.LookPath("python3"); err == nil {
			candidates = append(candidates, p)
		}
	}
	for _, py := range candidates {
		check := exec.Command(py, "-c", "import autobahn.twisted.websocket, twisted.internet.reactor")
		if check.Run() == nil {
			return py
		}
	}
	testkit.RequirePeer(t, false, "no python3 with Autobahn|Python and Twisted (tried %v): apt-get install python3-autobahn", candidates)
	return ""
}

// fakeSuite is a running stand-in fuzzing server.
type fakeSuite struct {
	url    string // ws://127.0.0.1:PORT
	cases  int
	outdir string
	stderr *testkit.SyncBuffer
}

var listeningLine = regexp.MustCompile(`^listening on (ws://\S+) \((\d+) cases\)$`)

// startFakeSuite runs the stand-in on a free port with args; it is stopped at cleanup.
func startFakeSuite(t *testing.T, args ...string) *fakeSuite {
	t.Helper()
	py := autobahnPython(t)
	s := &fakeSuite{outdir: t.TempDir(), stderr: &testkit.SyncBuffer{}}
	ctx, cancel := context.WithCancel(context.Background())
	args = append([]string{fakeSuiteScript, "--listen", "127.0.0.1:0", "--outdir", s.outdir}, args...)
	cmd := exec.CommandContext(ctx, py, args...)
	cmd.Stderr = s.stderr
	cmd.WaitDelay = 2 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("fuzzingserver.py stderr:\n%s", s.stderr.String())
		}
	})
	first := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			first <- sc.Text()
		}
		close(first)
	}()
	select {
	case line := <-first:
		m := listeningLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("fuzzingserver.py did not start: %q\n%s", line, s.stderr.String())
		}
		s.url = m[1]
		s.cases, _ = strconv.Atoi(m[2]) // digits, by the pattern
	case <-time.After(30 * time.Second):
		t.Fatalf("fuzzingserver.py did not start in 30 s:\n%s", s.stderr.String())
	}
	return s
}

// caseReport is one case's entry in the stand-in's index.json.
type caseReport struct {
	Behavior         string          `json:"behavior"`
	BehaviorClose    string          `json:"behaviorClose"`
	Result           string          `json:"result"`
	ResultClose      string          `json:"resultClose"`
	Description      string          `json:"description"`
	Size             int             `json:"size"` // of each message: characters of text, bytes of binary
	Messages         int             `json:"messages"`
	Echoes           int             `json:"echoes"`
	CompressedEchoes int             `json:"compressedEchoes"`
	Negotiated       *negotiatedPMCE `json:"negotiated"`
}

// negotiatedPMCE is the server's permessage-deflate state (Autobahn's PerMessageDeflate.__json__).
type negotiatedPMCE struct {
	ServerNoContextTakeover bool `json:"server_no_context_takeover"`
	ClientNoContextTakeover bool `json:"client_no_context_takeover"`
	ServerMaxWindowBits     int  `json:"server_max_window_bits"`
	ClientMaxWindowBits     int  `json:"client_max_window_bits"`
}

// reports reads the verdicts of agent from the last /updateReports.
func (s *fakeSuite) reports(t *testing.T, agent string) map[string]caseReport {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.outdir, "index.json"))
	if err != nil {
		t.Fatalf("reports: %v", err)
	}
	var all map[string]map[string]caseReport
	if err := json.Unmarshal(b, &all); err != nil {
		t.Fatalf("reports: %v", err)
	}
	return all[agent]
}

// expectedAnswer is what the suite's acceptance function for the group of
// case id (12.x or 13.x) asks of the client: client_no_context_takeover and
// client_max_window_bits (15 when not asked).
func expectedAnswer(id string) (clientNoCT bool, clientBits int) {
	group := id[:strings.LastIndexByte(id, '.')]
	switch group {
	case "13.2", "13.6":
		return true, 15
	case "13.3":
		return false, 9
	case "13.5", "13.7": // 13.7 prefers 13.5's acceptance
		return true, 9
	}
	return false, 15 // 12.*, 13.1, 13.4 (client_max_window_bits=15)
}

// compressible reports whether the data of case id shrinks at level 1 on its
// own (everything but 12.2, a noisy bitmap, and 12.5, random bytes).
func compressible(id string) bool {
	return !strings.HasPrefix(id, "12.2.") && !strings.HasPrefix(id, "12.5.")
}

// checkCompressionCase checks one case of a run with permessage-deflate offered.
func checkCompressionCase(t *testing.T, cfg config, id string, r caseReport) {
	t.Helper()
	if r.Behavior != "OK" || r.BehaviorClose != "OK" {
		t.Errorf("%s: %s (%s); close %s (%s)", id, r.Behavior, r.Result, r.BehaviorClose, r.ResultClose)
		return
	}
	if r.Echoes != r.Messages || r.Messages == 0 {
		t.Errorf("%s: %d echoes of %d messages", id, r.Echoes, r.Messages)
	}
	n := r.Negotiated
	if n == nil {
		t.Errorf("%s: no negotiated parameters reported", id)
		return
	}
	clientNoCT, clientBits := expectedAnswer(id)
	nct := cfg.deflate == deflateNoContextTakeover
	wantServerBits := 15
	if cfg.serverBits != 0 {
		wantServerBits = cfg.serverBits
	}
	if n.ClientNoContextTakeover != clientNoCT || n.ClientMaxWindowBits != clientBits ||
		n.ServerNoContextTakeover != nct || n.ServerMaxWindowBits != wantServerBits {
		t.Errorf("%s: server's parameters %+v, want client_no_context_takeover=%v client_max_window_bits=%d server_no_context_takeover=%v server_max_window_bits=%d",
			id, *n, clientNoCT, clientBits, nct, wantServerBits)
	}
	// With context takeover every echo is compressed (wsmw then always sets RSV1);
	// without it, a message that would not shrink goes out plain.
	takeover := !nct && !clientNoCT
	if (takeover || (compressible(id) && r.Size >= 256)) && r.CompressedEchoes != r.Echoes {
		t.Errorf("%s: %d of %d echoes compressed, want all (client context takeover %v)", id, r.CompressedEchoes, r.Echoes, takeover)
	}
}

// TestDriverCompressionCases runs the stand-in's 216 cases for each -deflate
// value: off must leave every case UNIMPLEMENTED, as the suite reports a client
// without permessage-deflate; every other value must pass every case, with the
// parameters the suite's server asks for and compressed echoes.
func TestDriverCompressionCases(t *testing.T) {
	// Fewer messages than the suite's 1000 per case keep a run (under -race)
	// within half a minute: 128 KiB of messages, at least 3 (so that context
	// takeover spans messages) and at most 100 per case.
	s := startFakeSuite(t, "--budget", "131072", "--min-messages", "3", "--max-messages", "100")
	if s.cases != 216 {
		t.Fatalf("the stand-in has %d cases, want 216 (12.1.1-12.5.18, 13.1.1-13.7.18)", s.cases)
	}
	runs := []struct {
		agent      string
		deflate    deflateMode
		serverBits int
	}{
		{"wsgate-off", deflateOff, 0},
		{"wsgate-on", deflateOn, 0},
		{"wsgate-no-context-takeover", deflateNoContextTakeover, 0},
		{"wsgate-server-window-9", deflateOn, 9},
	}
	for _, run1 := range runs {
		t.Run(run1.agent, func(t *testing.T) {
			t.Parallel() // each run has its own agent, hence its own verdicts
			var logs testkit.SyncBuffer
			cfg := config{
				base: s.url, agent: run1.agent, caseTimeout: time.Minute, maxMessage: 1 << 20,
				deflate: run1.deflate, serverBits: run1.serverBits, log: log.New(&logs, "", 0),
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			if err := run(ctx, cfg); err != nil {
				t.Fatalf("run: %v\n%s", err, logs.String())
			}
			reps := s.reports(t, run1.agent)
			if len(reps) != s.cases {
				t.Fatalf("%d cases reported, want %d\n%s", len(reps), s.cases, logs.String())
			}
			for id, r := range reps {
				if run1.deflate == deflateOff {
					if r.Behavior != "UNIMPLEMENTED" || r.BehaviorClose != "OK" {
						t.Errorf("%s: %s, close %s; want UNIMPLEMENTED, close OK", id, r.Behavior, r.BehaviorClose)
					}
					continue
				}
				checkCompressionCase(t, cfg, id, r)
			}
			if t.Failed() {
				t.Logf("driver log:\n%s", logs.String())
			}
		})
	}
}
