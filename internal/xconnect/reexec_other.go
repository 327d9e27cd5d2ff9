//go:build !unix

package xconnect

import "errors"

func reexec(string, []string, []string) error {
	return errors.New("xconnect: re-executing the program is only supported on Unix")
}
