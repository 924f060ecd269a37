package backend

// KernelTime is one kernel's launches and GPU time over a timed period.
type KernelTime struct {
	Name    string  `json:"name"`
	Calls   int     `json:"calls"`
	Seconds float64 `json:"seconds"`
}

// KernelTimer is a backend that can say where its GPU time went (the CUDA backend with
// Options.KernelTimes on, or LUKV_CUDA_KERNEL_TIMES=1). KernelTimes waits for the device
// and returns every kernel's time since the previous call, most first, and starts a new
// period; it fails when kernel timing is off.
//
// (Not to be confused with LU-KV profiling, package eviction's Profile and `lukv-run
// profile`, which measures how the loss grows with eviction, or with Go's CPU profile,
// --cpuprofile of `lukv-run bench` and `eval`.)
type KernelTimer interface {
	KernelTimes() ([]KernelTime, error)
}
