package backend

// KernelStat is one kernel's launches and GPU time over a profiled period.
type KernelStat struct {
	Name    string  `json:"name"`
	Calls   int     `json:"calls"`
	Seconds float64 `json:"seconds"`
}

// KernelProfiler is a backend that can say where its GPU time went (the CUDA backend
// with its kernel profile on). KernelProfile waits for the device and returns every
// kernel's time since the previous call, most first, and starts a new period; it fails
// when the profile is off.
type KernelProfiler interface {
	KernelProfile() ([]KernelStat, error)
}
