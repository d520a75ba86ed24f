# Builds one host's system from its inventory entry: the platform's modules, the host's own module,
# home-manager for its users (as a system module, so user configuration switches and rolls back with the
# system) and sops-nix (so the host decrypts its own secrets when it activates).
{ inputs, self, inventory }:
let
  # What every module may ask for: the host's name and facts, the inventory, the flake's inputs.
  argsFor = name: host: {
    inherit inputs self inventory;
    hostName = name;
    hostFacts = host;
  };

  homeFor = host: {
    home-manager.sharedModules = [ inputs.sops-nix.homeManagerModules.sops ];
    home-manager.useGlobalPkgs = true;
    home-manager.useUserPackages = true;
    home-manager.users = builtins.listToAttrs (map
      (user: { name = user; value = import ../home/${user}.nix; })
      host.users);
  };
in
{
  darwin = name: host: inputs.nix-darwin.lib.darwinSystem {
    specialArgs = argsFor name host;
    modules = [
      { nixpkgs.hostPlatform = host.system; }
      ../common
      ../darwin
      ../hosts/${name}
      inputs.home-manager.darwinModules.home-manager
      (homeFor host)
      inputs.sops-nix.darwinModules.sops
    ];
  };

  nixos = name: host: inputs.nixpkgs.lib.nixosSystem {
    specialArgs = argsFor name host;
    modules = [
      { nixpkgs.hostPlatform = host.system; }
      ../common
      ../nixos
      ../hosts/${name}
      inputs.home-manager.nixosModules.home-manager
      (homeFor host)
      inputs.sops-nix.nixosModules.sops
    ];
  };

  # nix-on-droid has its own home-manager entry point and no sops-nix module; used once NIXEDUP is enabled.
  droid = name: host: inputs.nix-on-droid.lib.nixOnDroidConfiguration {
    pkgs = import inputs.nixpkgs { system = host.system; };
    extraSpecialArgs = argsFor name host;
    modules = [ ../hosts/${name} ];
  };
}
