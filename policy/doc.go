// Package policy holds berth's pure decisions — who may do what, which
// artifacts a rule selects — with no I/O. Every other package may import it.
package policy
