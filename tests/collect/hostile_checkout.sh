# A deploy checkout owned by {owner} whose config names programs git runs (gpg.program with log.showSignature
# on a signed HEAD, core.fsmonitor) and a post-checkout hook: each writes {base}/marks/marker-<uid that ran it>.
# A template: {base} and {owner} are filled by the tests (str.format; braces for the shell are doubled).
set -eu
base={base}
rm -rf "$base"; mkdir -p "$base/marks"; chmod 1777 "$base/marks"
repo="$base/repo"; mkdir "$repo"
cat > "$base/evil" <<'SH'
#!/bin/sh
touch "{base}/marks/marker-$(id -u)"
exit 1
SH
chmod 0755 "$base/evil"
git -C "$repo" init -q -b main
git -C "$repo" -c user.name=t -c user.email=t@example.invalid commit -q --allow-empty -m "release one"
git -C "$repo" tag v1.0.0
git -C "$repo" -c user.name=t -c user.email=t@example.invalid commit -q --allow-empty -m "release two"
# A signature on HEAD: `git log` with log.showSignature runs gpg.program to check it.
sig=$(git -C "$repo" cat-file commit HEAD | awk '/^committer /{{print; print "gpgsig -----BEGIN PGP SIGNATURE-----"; print " x"; print " -----END PGP SIGNATURE-----"; next}} {{print}}' | git -C "$repo" hash-object -t commit -w --stdin)
git -C "$repo" update-ref refs/heads/main "$sig"
git -C "$repo" tag v1.1.0 "$sig"
git -C "$repo" config gpg.program "$base/evil"
git -C "$repo" config log.showSignature true
git -C "$repo" config core.fsmonitor "$base/evil"
printf '#!/bin/sh\n"%s/evil"\n' "$base" > "$repo/.git/hooks/post-checkout"
chmod 0755 "$repo/.git/hooks/post-checkout"
chown -R {owner}: "$repo"
