package main

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	ociremote "github.com/sigstore/cosign/v2/pkg/oci/remote"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/urfave/cli/v2"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/replicate"
)

func (m *Main) promoteCommand() *cli.Command {
	return &cli.Command{
		Name:      "promote",
		Usage:     "copy an artifact by digest, with its signatures, to another repository (or --endpoint), after verifying its cosign signature",
		ArgsUsage: "SRC_REPO:TAG|SRC_REPO@DIGEST DST_REPO:TAG",
		Description: "The source is resolved to its digest once, so what is verified is what is copied.\n" +
			"With --require-signature the cosign signature of that digest must verify with\n" +
			"the public key (offline: no transparency log), or nothing is copied.",
		Flags: append(clientFlags(),
			&cli.StringFlag{Name: "endpoint", Usage: "copy to this endpoint instead of this registry"},
			&cli.StringFlag{Name: "require-signature", Usage: "cosign public key `FILE` (PEM) the signature must verify with"},
		),
		Action: func(c *cli.Context) error {
			a, err := args(c, "SRC_REPO:TAG|SRC_REPO@DIGEST", "DST_REPO:TAG")
			if err != nil {
				return err
			}
			srcRepo, srcRef, err := parseArtifact(a[0])
			if err != nil {
				return err
			}
			dstRepo, dstTag, err := parseArtifact(a[1])
			if err != nil {
				return err
			}
			if oci.IsDigestReference(dstTag) {
				return fmt.Errorf("%q: the destination needs a tag", a[1])
			}
			client, output, err := clientOf(c)
			if err != nil {
				return err
			}
			ref, opts, err := registryRef(client, srcRepo, srcRef)
			if err != nil {
				return err
			}
			desc, err := remote.Head(ref, append(opts, remote.WithContext(c.Context))...)
			if err != nil {
				return fmt.Errorf("promote: %s: %w", a[0], err)
			}
			digest := oci.Digest(desc.Digest.String())
			if key := c.String("require-signature"); key != "" {
				if err := verifySignature(c.Context, client, srcRepo, digest, key); err != nil {
					return fmt.Errorf("promote refused: %s (%s): %w", a[0], digest, err)
				}
			}
			req := replicate.PromoteRequest{SourceRepo: srcRepo, Digest: digest, DestRepo: dstRepo, DestTag: dstTag, Endpoint: c.String("endpoint")}
			var res replicate.PromoteResult
			if err := client.do(c.Context, http.MethodPost, "promote", req, &res); err != nil {
				return err
			}
			if output == outputJSON {
				return writeJSONOut(m.Stdout, res)
			}
			where := "this registry"
			if e := c.String("endpoint"); e != "" {
				where = "endpoint " + e
			}
			signed := ""
			if c.String("require-signature") != "" {
				signed = ", signature verified"
			}
			_, err = fmt.Fprintf(m.Stdout, "promoted %s (%s%s) to %s:%s at %s\n", a[0], digest, signed, dstRepo, dstTag, where)
			return err
		},
	}
}

// registryRef is the reference of repo:ref (or @digest) at the node
// client talks to, with the options to reach it with its credentials.
func registryRef(client apiClient, repo, ref string) (name.Reference, []remote.Option, error) {
	u, err := url.Parse(client.server)
	if err != nil || u.Host == "" {
		return nil, nil, fmt.Errorf("server %q: want a URL like http://127.0.0.1:5000", client.server)
	}
	var nopts []name.Option
	if u.Scheme == "http" {
		nopts = append(nopts, name.Insecure)
	}
	sep := ":"
	if oci.IsDigestReference(ref) {
		sep = "@"
	}
	r, err := name.ParseReference(u.Host+"/"+repo+sep+ref, nopts...)
	if err != nil {
		return nil, nil, err
	}
	return r, []remote.Option{remote.WithAuth(client.registryAuth())}, nil
}

// verifySignature checks, with sigstore/cosign, that repo@d at the node
// carries a cosign signature that verifies with the PEM public key in
// keyFile. It is offline: no transparency log, no certificate timestamps.
func verifySignature(ctx context.Context, client apiClient, repo string, d oci.Digest, keyFile string) error {
	pem, err := os.ReadFile(keyFile)
	if err != nil {
		return fmt.Errorf("read the public key: %w", err)
	}
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(pem)
	if err != nil {
		return fmt.Errorf("public key %s: %w", keyFile, err)
	}
	verifier, err := signature.LoadVerifier(pub, crypto.SHA256)
	if err != nil {
		return fmt.Errorf("public key %s: %w", keyFile, err)
	}
	ref, opts, err := registryRef(client, repo, string(d))
	if err != nil {
		return err
	}
	co := &cosign.CheckOpts{
		SigVerifier:        verifier,
		IgnoreTlog:         true,
		IgnoreSCT:          true,
		ClaimVerifier:      cosign.SimpleClaimVerifier,
		RegistryClientOpts: []ociremote.Option{ociremote.WithRemoteOptions(append(opts, remote.WithContext(ctx))...)},
	}
	sigs, _, err := cosign.VerifyImageSignatures(ctx, ref, co)
	if err != nil {
		var none *cosign.ErrNoSignaturesFound
		if errors.As(err, &none) || strings.Contains(err.Error(), "no signatures found") {
			return errors.New("it has no cosign signature")
		}
		return fmt.Errorf("its signature does not verify with %s: %w", keyFile, err)
	}
	if len(sigs) == 0 {
		return errors.New("it has no cosign signature")
	}
	return nil
}
