package oci

import (
	"fmt"
	"regexp"
)

// MaxNameLength bounds a repository name. The spec leaves it open; distribution
// and most clients use 255.
const MaxNameLength = 255

// The distribution spec's grammar:
//
//	name: [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*
//	tag:  [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}
//
// Neither can contain "..", a leading "/" or any character outside this set,
// so a valid name can never reach outside the data directory.
var (
	nameRe = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$`)
	tagRe  = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
)

// ValidateName checks a repository name.
func ValidateName(name string) error {
	if len(name) == 0 || len(name) > MaxNameLength {
		return fmt.Errorf("%w: length must be 1 to %d", ErrNameInvalid, MaxNameLength)
	}
	if !nameRe.MatchString(name) {
		return fmt.Errorf("%w: %q", ErrNameInvalid, name)
	}
	return nil
}

// ValidateTag checks a tag.
func ValidateTag(tag string) error {
	if !tagRe.MatchString(tag) {
		return fmt.Errorf("%w: %q", ErrTagInvalid, tag)
	}
	return nil
}

// IsDigestReference reports whether a manifest reference is a digest rather
// than a tag (a tag cannot contain ':').
func IsDigestReference(ref string) bool {
	for i := 0; i < len(ref); i++ {
		if ref[i] == ':' {
			return true
		}
	}
	return false
}
