# alex's home, on every host alex is listed on.
{ config, pkgs, ... }:
{
  imports = [ ./common.nix ];

  # alex's own secrets, decrypted at activation with alex's key (`cairn secrets init` made it).
  sops.age.keyFile = "${config.home.homeDirectory}/.config/sops/age/keys.txt";
  sops.defaultSopsFile = ../../secrets/users/alex/home.yaml;
  sops.secrets.github_token = { };
  programs.zsh.initContent = ''
    export GITHUB_TOKEN="$(cat ${config.sops.secrets.github_token.path})"
  '';

  programs.git.settings.user = {
    name = "Alex";
    email = "alex@example.org";
  };
  home.packages = with pkgs; [ rustup nodejs python3 ];
}
