package cpu

import (
	"testing"

	"github.com/lukv/lukv/backend/backendtest"
)

func TestConformance(t *testing.T) {
	backendtest.Run(t, New(), 1e-5)
}

func TestConformanceOneThread(t *testing.T) {
	backendtest.Run(t, &Backend{Threads: 1}, 1e-5)
}
