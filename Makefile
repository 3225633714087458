# Build, install and package Sluice.  `make install` needs root; DESTDIR works as usual.
PREFIX ?= /usr/local
DESTDIR ?=
BIN := .build/release/sluice
# The version is written once, in Sources/SluiceCore/Version.swift.
VERSION := $(shell sed -n 's/.*static let number = "\(.*\)"/\1/p' Sources/SluiceCore/Version.swift)

# Man page and shell completions, generated from the CLI's own definitions (swift-argument-parser)
# by the binary being installed; sluice.toml(5) is written by hand in doc/.
DOCS := .build/docs
MANTOOL := .build/debug/generate-manual
DOCDATE := $(shell git log -1 --format=%cs 2>/dev/null || date +%F)

.PHONY: build test install install-files uninstall deb deb-control clean print-version docs

build:
	swift build -c release

test:
	scripts/test.sh

install: build install-files

docs:
	[ -x $(MANTOOL) ] || swift build --product generate-manual
	rm -rf $(DOCS) && mkdir -p $(DOCS)
	$(MANTOOL) $(BIN) --section 8 --date $(DOCDATE) --authors "Sluice developers" -o $(DOCS)
	$(BIN) --generate-completion-script bash > $(DOCS)/sluice.bash
	$(BIN) --generate-completion-script zsh > $(DOCS)/_sluice
	$(BIN) --generate-completion-script fish > $(DOCS)/sluice.fish

install-files: docs
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/sluice
	install -D -m 0644 $(DOCS)/sluice.8 $(DESTDIR)$(PREFIX)/share/man/man8/sluice.8
	install -D -m 0644 doc/sluice.toml.5 $(DESTDIR)$(PREFIX)/share/man/man5/sluice.toml.5
	install -D -m 0644 $(DOCS)/sluice.bash $(DESTDIR)$(PREFIX)/share/bash-completion/completions/sluice
	install -D -m 0644 $(DOCS)/_sluice $(DESTDIR)$(PREFIX)/share/zsh/vendor-completions/_sluice
	install -D -m 0644 $(DOCS)/sluice.fish $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/sluice.fish
	install -D -m 0644 systemd/sluice.service $(DESTDIR)/etc/systemd/system/sluice.service
	sed -i 's#/usr/local/bin/sluice#$(PREFIX)/bin/sluice#g; s#/usr/local/share/doc#$(PREFIX)/share/doc#' $(DESTDIR)/etc/systemd/system/sluice.service
	install -d -m 0700 $(DESTDIR)/etc/sluice
	# The example config only if there is no config yet: never overwrite an admin's keys.
	[ -e $(DESTDIR)/etc/sluice/sluice.toml ] || install -m 0600 examples/site-to-site-gw.toml $(DESTDIR)/etc/sluice/sluice.toml
	install -d $(DESTDIR)$(PREFIX)/share/sluice/nft-rules $(DESTDIR)$(PREFIX)/share/sluice/examples $(DESTDIR)$(PREFIX)/share/doc/sluice
	install -m 0644 nft-rules/*.nft nft-rules/README.md $(DESTDIR)$(PREFIX)/share/sluice/nft-rules/
	install -m 0644 examples/*.toml examples/*.json examples/*.yml $(DESTDIR)$(PREFIX)/share/sluice/examples/
	install -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/sluice/README.md
	@echo "installed; edit /etc/sluice/sluice.toml, then: systemctl daemon-reload && systemctl enable --now sluice"

# Removes what install placed, except /etc/sluice (your config and keys) and
# /var/lib/sluice (sequence high-water marks: deleting them risks nonce reuse).
uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/sluice $(DESTDIR)/etc/systemd/system/sluice.service
	rm -f $(DESTDIR)$(PREFIX)/share/man/man8/sluice.8 $(DESTDIR)$(PREFIX)/share/man/man5/sluice.toml.5
	rm -f $(DESTDIR)$(PREFIX)/share/bash-completion/completions/sluice $(DESTDIR)$(PREFIX)/share/zsh/vendor-completions/_sluice
	rm -f $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/sluice.fish
	rm -rf $(DESTDIR)$(PREFIX)/share/sluice $(DESTDIR)$(PREFIX)/share/doc/sluice
	@echo "kept /etc/sluice and /var/lib/sluice"

# The package carries a binary with the Swift runtime linked in (a firewall has no
# Swift toolchain), built in its own folder.
deb:
	swift build -c release --static-swift-stdlib --scratch-path .build-static
	rm -rf .build/deb && mkdir -p .build/deb/DEBIAN
	$(MAKE) install-files BIN=.build-static/release/sluice DESTDIR=$(CURDIR)/.build/deb PREFIX=/usr
	$(MAKE) deb-control DEBROOT=$(CURDIR)/.build/deb
	dpkg-deb --root-owner-group --build .build/deb .build/sluice.deb

# The package's control files (the version from Version.swift); DEBROOT is the package tree.
DEBROOT ?= $(CURDIR)/.build/deb
deb-control:
	mkdir -p $(DEBROOT)/DEBIAN
	printf 'Package: sluice\nVersion: %s\nArchitecture: amd64\nMaintainer: Sluice developers\nDepends: nftables, iptables, libssl3, libnetfilter-queue1, libmnl0\nDescription: user-space IPsec (ESP) data plane fed by nftables and NFQUEUE\n' "$(VERSION)" > $(DEBROOT)/DEBIAN/control
	echo /etc/sluice/sluice.toml > $(DEBROOT)/DEBIAN/conffiles

clean:
	rm -rf .build

print-version:
	@echo $(VERSION)
