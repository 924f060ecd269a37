//go:build cuda

package cuda

// Kernel times: with Options.KernelTimes (or LUKV_CUDA_KERNEL_TIMES=1) every kernel
// launch and cuBLAS call is bracketed by two CUDA events on the stream, and KernelTimes
// sums the GPU time between each pair by kernel name. It answers "where does the GPU
// time of a decode step go" without nsys (not installed on the GPU machine we use), and
// the sum of the kernels against the wall time shows the gaps between them. Recording
// events costs host time (two cuEventRecord per launch), so a timed run measures shares,
// not speed. (This was called the kernel profile, and LUKV_CUDA_PROFILE=1 still turns it
// on; "profile" now means LU-KV profiling only.)

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"gorgonia.org/cu"

	"github.com/lukv/lukv/backend"
)

// KernelTime is backend.KernelTime: one kernel's GPU time over a timed period.
type KernelTime = backend.KernelTime

var _ backend.KernelTimer = (*Backend)(nil)

type kernelSpan struct {
	name       string
	start, end cu.Event
}

// kernelTimer records the spans of the launches since the last KernelTimes call.
type kernelTimer struct {
	spans []kernelSpan
	spare []cu.Event // events of spans already read, for reuse
	err   error      // the first event error; it turns the timer off
}

// kernelTimesFromEnv sets opt.KernelTimes from LUKV_CUDA_KERNEL_TIMES=1 or, deprecated,
// LUKV_CUDA_PROFILE=1 (its name before the rename; still accepted).
func kernelTimesFromEnv(opt *Options) {
	if os.Getenv("LUKV_CUDA_KERNEL_TIMES") == "1" || os.Getenv("LUKV_CUDA_PROFILE") == "1" {
		opt.KernelTimes = true
	}
}

func (p *kernelTimer) event() (cu.Event, error) {
	if n := len(p.spare); n > 0 {
		e := p.spare[n-1]
		p.spare = p.spare[:n-1]
		return e, nil
	}
	return cu.MakeEvent(cu.DefaultEvent)
}

// begin records the start event of a launch of name and returns its span's index (-1:
// not timing); end records the end event of that span. On an event error the timer
// stops recording (KernelTimes reports the error); the launches go on.
func (p *kernelTimer) begin(name string) int {
	if p == nil || p.err != nil {
		return -1
	}
	s := kernelSpan{name: name}
	var err error
	if s.start, err = p.event(); err == nil {
		if s.end, err = p.event(); err == nil {
			err = s.start.Record(cu.NoStream)
		}
	}
	if err != nil {
		p.err = fmt.Errorf("cuda: kernel times: recording an event before %s: %w", name, err)
		return -1
	}
	p.spans = append(p.spans, s)
	return len(p.spans) - 1
}

func (p *kernelTimer) end(i int) {
	if i < 0 || p.err != nil {
		return
	}
	if err := p.spans[i].end.Record(cu.NoStream); err != nil {
		p.err = fmt.Errorf("cuda: kernel times: recording an event after %s: %w", p.spans[i].name, err)
	}
}

// destroy frees every event (Close).
func (p *kernelTimer) destroy() {
	if p == nil {
		return
	}
	for _, s := range p.spans {
		p.spare = append(p.spare, s.start, s.end)
	}
	for i := range p.spare {
		cu.DestroyEvent(&p.spare[i])
	}
	p.spans, p.spare = nil, nil
}

// KernelTimes waits for the device and returns each kernel's launches and GPU time since
// the previous call (or since New), most time first, then starts a new period. It fails
// when kernel timing is off or an event could not be recorded.
func (b *Backend) KernelTimes() ([]KernelTime, error) {
	defer b.enter()()
	p := b.ktimes
	if p == nil {
		return nil, errors.New("cuda: kernel times are off (Options.KernelTimes or LUKV_CUDA_KERNEL_TIMES=1)")
	}
	if p.err != nil {
		return nil, p.err
	}
	if err := cu.Synchronize(); err != nil {
		return nil, fmt.Errorf("cuda: kernel times: %w", err)
	}
	by := map[string]*KernelTime{}
	for _, s := range p.spans {
		ms, err := s.start.Elapsed(s.end)
		if err != nil {
			return nil, fmt.Errorf("cuda: kernel times: time of %s: %w", s.name, err)
		}
		st := by[s.name]
		if st == nil {
			st = &KernelTime{Name: s.name}
			by[s.name] = st
		}
		st.Calls++
		st.Seconds += ms / 1e3
		p.spare = append(p.spare, s.start, s.end)
	}
	p.spans = p.spans[:0]
	out := make([]KernelTime, 0, len(by))
	for _, st := range by {
		out = append(out, *st)
	}
	slices.SortFunc(out, func(a, b KernelTime) int {
		return cmp.Or(cmp.Compare(b.Seconds, a.Seconds), strings.Compare(a.Name, b.Name))
	})
	return out, nil
}
