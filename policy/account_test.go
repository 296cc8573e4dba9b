package policy

import (
	"errors"
	"strings"
	"testing"
)

func TestValidatePassword(t *testing.T) {
	tests := []struct {
		name, password string
		ok             bool
	}{
		{"strong", "Harbor12345", true},
		{"shortest", "Abcdef12", true},
		{"too short", "Abcde12", false},
		{"bcrypt's longest", "Ab1" + strings.Repeat("x", 69), true},
		{"longer than bcrypt hashes", "Ab1" + strings.Repeat("x", 70), false},
		{"multi-byte characters count in bytes", "Ab1" + strings.Repeat("é", 35), false},
		{"no digit", "Abcdefgh", false},
		{"no upper-case letter", "abcdefg1", false},
		{"the user name", "Alice1234", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidatePassword("alice1234", tt.password)
			if tt.ok != (err == nil) {
				t.Fatalf("ValidatePassword(%q) = %v, want ok %v", tt.password, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Fatalf("ValidatePassword(%q) = %v, want it to wrap ErrInvalid", tt.password, err)
			}
		})
	}
}

func TestMemberValidateRole(t *testing.T) {
	for _, r := range Roles {
		if err := (Member{Project: "p", User: "u", Role: r}).Validate(); err != nil {
			t.Errorf("role %s: %v", r, err)
		}
	}
	// ParseRole's aliases are for input; a stored member holds the name.
	for _, r := range []Role{"", "admin", "1", "ProjectAdmin", "owner"} {
		if err := (Member{Project: "p", User: "u", Role: r}).Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("role %q: %v, want ErrInvalid", r, err)
		}
	}
}
