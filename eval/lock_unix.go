//go:build unix

package eval

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// LockFolder takes an exclusive lock on dir/.lock so two evaluations cannot append to the
// same results.jsonl at once (their cells would be duplicated). The lock goes with the
// process, also when it is killed.
func LockFolder(dir string) (unlock func(), err error) {
	f, err := os.OpenFile(dir+"/.lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: another lukv-run eval is writing there (wait for it or use another --out)", dir)
		}
		return nil, fmt.Errorf("%s: lock: %w", dir, err)
	}
	return func() { f.Close() }, nil
}
