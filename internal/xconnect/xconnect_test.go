package xconnect

import (
	"slices"
	"testing"
)

func TestEnv(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want []string
	}{
		{[]string{"A=1"}, []string{"A=1", "GODEBUG=http2xconnect=1"}},
		{[]string{"GODEBUG=", "B=2"}, []string{"B=2", "GODEBUG=http2xconnect=1"}},
		{[]string{"GODEBUG=gctrace=1"}, []string{"GODEBUG=gctrace=1,http2xconnect=1"}},
	} {
		if got := Env(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("Env(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
