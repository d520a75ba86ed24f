{
  description = "alex and susu's machines (nix-darwin, NixOS, home-manager, sops-nix) from one inventory";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixpkgs-unstable";
    nix-darwin.url = "github:LnL7/nix-darwin";
    nix-darwin.inputs.nixpkgs.follows = "nixpkgs";
    home-manager.url = "github:nix-community/home-manager";
    home-manager.inputs.nixpkgs.follows = "nixpkgs";
    sops-nix.url = "github:Mic92/sops-nix";
    sops-nix.inputs.nixpkgs.follows = "nixpkgs";
    # NIXEDUP (planned): uncomment with its `nixOnDroidConfigurations` line below, then `nix flake lock`.
    # nix-on-droid.url = "github:nix-community/nix-on-droid";
  };

  outputs = inputs@{ self, nixpkgs, ... }:
    let
      # The one list of hosts, users and environments; cairn reads the same file.
      inventory = builtins.fromTOML (builtins.readFile ./modules/inventory.toml);

      # Only builtins decide which configurations exist, so their names can be listed offline, without
      # fetching nixpkgs: `nix eval .#darwinConfigurations --apply builtins.attrNames`.
      enabledOfKind = kind:
        builtins.removeAttrs inventory.hosts (builtins.filter
          (name: !(inventory.hosts.${name}.enabled && inventory.hosts.${name}.kind == kind))
          (builtins.attrNames inventory.hosts));

      mk = import ./modules/lib/mk-system.nix { inherit inputs self inventory; };

      systems = [ "aarch64-darwin" "x86_64-darwin" "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: builtins.listToAttrs (map (system: { name = system; value = f system; }) systems);
    in
    {
      darwinConfigurations = builtins.mapAttrs mk.darwin (enabledOfKind "darwin");
      nixosConfigurations = builtins.mapAttrs mk.nixos (enabledOfKind "nixos");
      # nixOnDroidConfigurations = builtins.mapAttrs mk.droid (enabledOfKind "droid");

      packages = forAllSystems (system: rec {
        cairn = nixpkgs.legacyPackages.${system}.callPackage ./modules/packages/cairn.nix { };
        default = cairn;
      });

      apps = forAllSystems (system: {
        default = {
          type = "app";
          program = "${self.packages.${system}.cairn}/bin/cairn";
        };
      });

      devShells = forAllSystems (system: import ./modules/devshells.nix {
        pkgs = nixpkgs.legacyPackages.${system};
        cairn = self.packages.${system}.cairn;
      });

      formatter = forAllSystems (system: nixpkgs.legacyPackages.${system}.nixpkgs-fmt);

      lib = {
        inherit inventory;
        hostNames = builtins.attrNames inventory.hosts;
        # Evaluation tests (modules/tests.nix): `nix eval --json .#lib.failedTests` is [] when all pass.
        failedTests = import ./modules/tests.nix { inherit self inventory; };
      };
    };
}
