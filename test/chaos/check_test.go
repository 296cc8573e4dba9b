package chaos

import "testing"

func TestCrashLines(t *testing.T) {
	logs := []byte(`{"level":"INFO","msg":"berth ready"}
panic: runtime error: invalid memory address or nil pointer dereference
[signal SIGSEGV: segmentation violation]

goroutine 1 [running]:
main.main()
	/src/main.go:10
	/src/more.go:1
{"level":"INFO","msg":"starting berth"}
fatal error: concurrent map writes
`)
	got := crashLines("n1", logs)
	if len(got) != 2 {
		t.Fatalf("found %d crashes, want 2: %q", len(got), got)
	}
	if want := "n1: panic: runtime error"; got[0][:len(want)] != want {
		t.Errorf("first crash %q, want it to start with %q", got[0], want)
	}
	if crashLines("n1", []byte(`{"msg":"request","status":200}`+"\n")) != nil {
		t.Error("a clean log has crash lines")
	}
}
