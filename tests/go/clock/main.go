// fl-clock-go: the Go clock server of the time-skew tests (tests/src/clock.rs speaks to it as
// to `fl-probe clock-server`). It says "ready", then answers each line on stdin with one JSON
// reading of every way a Go program reads the realtime clock: the runtime's time.Now (the
// vDSO's clock_gettime), syscall.Gettimeofday and syscall.Time (the vDSO's, through the
// runtime), and the raw system calls clock_gettime and gettimeofday.
package main

import (
	"bufio"
	"fmt"
	"os"
	"syscall"
	"time"
	"unsafe"
)

func rawClockGettime() int64 {
	var ts syscall.Timespec
	syscall.RawSyscall(syscall.SYS_CLOCK_GETTIME, 0, uintptr(unsafe.Pointer(&ts)), 0)
	return ts.Nano()
}

func rawGettimeofday() int64 {
	var tv syscall.Timeval
	syscall.RawSyscall(syscall.SYS_GETTIMEOFDAY, uintptr(unsafe.Pointer(&tv)), 0, 0)
	return tv.Nano()
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintln(out, "ready")
	out.Flush()
	start := time.Now()
	for in.Scan() {
		now := time.Now()
		var tv syscall.Timeval
		syscall.Gettimeofday(&tv)
		t, _ := syscall.Time(nil)
		raw := rawClockGettime()
		rawTv := rawGettimeofday()
		fmt.Fprintf(out,
			"{\"vdso_ns\":%d,\"gettimeofday_ns\":%d,\"time_s\":%d,\"raw_ns\":%d,\"raw_gettimeofday_ns\":%d,\"monotonic_ns\":%d,\"pid\":%d}\n",
			now.UnixNano(), tv.Nano(), int64(t), raw, rawTv, int64(time.Since(start)), os.Getpid())
		out.Flush()
	}
}
