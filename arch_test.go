package berth_test

import (
	"bufio"
	"bytes"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/berth-registry/berth"

// allowed lists, for each top-level area of the module, the other areas its
// packages may import (an area may always import its own packages). Imports
// point one way: policy and oci at the bottom, cmd at the top; nothing
// imports cmd or test. An area missing here fails the test until it is
// given a rule. See STYLE.md, "Layout and imports".
var allowed = map[string][]string{
	"oci":       {},
	"policy":    {"oci"}, // both pure; policy's rules name oci's digests and versions
	"cluster":   {"oci", "policy"},
	"registry":  {"oci", "policy"},
	"replicate": {"registry", "oci", "policy"},
	"retention": {"oci", "policy"},
	"api":       {"registry", "replicate", "oci", "policy"},
	"ui":        {"api", "oci", "policy"},
	"cmd":       {"*"},
	"test":      {"*"},
}

// never may be imported by any package, whatever allowed says.
var never = []string{"cmd", "test"}

// area is the top-level directory of a package of the module ("cmd" for
// cmd/berth), or "" for a package outside it.
func area(pkg string) string {
	rest, ok := strings.CutPrefix(pkg, module+"/")
	if !ok {
		return ""
	}
	first, _, _ := strings.Cut(rest, "/")
	return first
}

func TestImportAllowList(t *testing.T) {
	// -e: report the imports of packages that do not compile yet, too.
	cmd := exec.Command("go", "list", "-e", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, "./...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	checked := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		pkg, imports := fields[0], fields[1:]
		from := area(pkg)
		if from == "" {
			continue // the root package (build tools only)
		}
		checked++
		rule, ok := allowed[from]
		if !ok {
			t.Errorf("%s: no import rule for area %q; add one to allowed in arch_test.go", pkg, from)
			continue
		}
		for _, imp := range imports {
			to := area(imp)
			switch {
			case to == "" || to == from:
				// outside the module, or within the same area
			case slices.Contains(never, to):
				t.Errorf("%s imports %s: nothing may import %s/", pkg, imp, to)
			case slices.Contains(rule, "*") || slices.Contains(rule, to):
			default:
				t.Errorf("%s imports %s: %s may import only %v", pkg, imp, from, rule)
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if checked == 0 {
		t.Fatal("go list reported no packages of the module")
	}
}
