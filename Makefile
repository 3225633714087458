# Build, install and package Sluice.  `make install` needs root; DESTDIR works as usual.
PREFIX ?= /usr/local
DESTDIR ?=
BIN := .build/release/sluice
VERSION := 0.1+git$(shell git rev-parse --short HEAD 2>/dev/null || echo 0)

.PHONY: build test install install-files uninstall deb clean

build:
	swift build -c release

test:
	scripts/test.sh

install: build install-files

install-files:
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/sluice
	install -D -m 0644 systemd/sluice.service $(DESTDIR)/etc/systemd/system/sluice.service
	sed -i 's#/usr/local/bin/sluice#$(PREFIX)/bin/sluice#g; s#/usr/local/share/doc#$(PREFIX)/share/doc#' $(DESTDIR)/etc/systemd/system/sluice.service
	install -d -m 0700 $(DESTDIR)/etc/sluice
	# The example config only if there is no config yet: never overwrite an admin's keys.
	[ -e $(DESTDIR)/etc/sluice/sluice.toml ] || install -m 0600 examples/site-to-site-gw.toml $(DESTDIR)/etc/sluice/sluice.toml
	install -d $(DESTDIR)$(PREFIX)/share/sluice/nft-rules $(DESTDIR)$(PREFIX)/share/sluice/examples $(DESTDIR)$(PREFIX)/share/doc/sluice
	install -m 0644 nft-rules/*.nft nft-rules/README.md $(DESTDIR)$(PREFIX)/share/sluice/nft-rules/
	install -m 0644 examples/*.toml $(DESTDIR)$(PREFIX)/share/sluice/examples/
	install -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/sluice/README.md
	@echo "installed; edit /etc/sluice/sluice.toml, then: systemctl daemon-reload && systemctl enable --now sluice"

# Removes what install placed, except /etc/sluice (your config and keys) and
# /var/lib/sluice (sequence high-water marks: deleting them risks nonce reuse).
uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/sluice $(DESTDIR)/etc/systemd/system/sluice.service
	rm -rf $(DESTDIR)$(PREFIX)/share/sluice $(DESTDIR)$(PREFIX)/share/doc/sluice
	@echo "kept /etc/sluice and /var/lib/sluice"

# The package carries a binary with the Swift runtime linked in (a firewall has no
# Swift toolchain), built in its own folder.
deb:
	swift build -c release --static-swift-stdlib --scratch-path .build-static
	rm -rf .build/deb && mkdir -p .build/deb/DEBIAN
	$(MAKE) install-files BIN=.build-static/release/sluice DESTDIR=$(CURDIR)/.build/deb PREFIX=/usr
	printf 'Package: sluice\nVersion: %s\nArchitecture: amd64\nMaintainer: Sluice developers\nDepends: nftables, iptables, libssl3, libnetfilter-queue1, libmnl0\nDescription: user-space IPsec (ESP) data plane fed by nftables and NFQUEUE\n' "$(VERSION)" > .build/deb/DEBIAN/control
	echo /etc/sluice/sluice.toml > .build/deb/DEBIAN/conffiles
	dpkg-deb --root-owner-group --build .build/deb .build/sluice.deb

clean:
	rm -rf .build
