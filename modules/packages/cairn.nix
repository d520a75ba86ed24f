# cairn itself, built from this repository with the pinned nixpkgs' Rust toolchain and Cargo.lock, so a Nix
# user runs `nix run .#cairn -- run validate` on any of the fleet's systems. The plugins are built on their own
# (plugins/build.sh, wasm32); this package is the two executables.
{ lib, rustPlatform }:
rustPlatform.buildRustPackage {
  pname = "cairn";
  version = "0.1.0";
  src = lib.cleanSourceWith {
    src = ../..;
    # The configuration and the build products are not part of the program.
    filter = path: type:
      let name = baseNameOf path; in
        !(builtins.elem name [ "target" ".cairn" "secrets" "dist" "node_modules" ]);
  };
  cargoLock.lockFile = ../../Cargo.lock;
  cargoBuildFlags = [ "--bin" "cairn" "--bin" "cairn-plugin-host" ];
  # The test suite starts real servers (nginx, OpenBao, moto, a Pushgateway) that the build sandbox cannot.
  doCheck = false;
  meta = {
    description = "A task runner for people who run many machines from one repository";
    license = with lib.licenses; [ mit asl20 ];
    mainProgram = "cairn";
  };
}
