# susu's home, on NIXY, NIXI and NIXY2.
{ config, pkgs, ... }:
{
  imports = [ ./common.nix ];

  # susu's own secrets, decrypted at activation with susu's key (`cairn secrets init` made it).
  sops.age.keyFile = "${config.home.homeDirectory}/.config/sops/age/keys.txt";
  sops.defaultSopsFile = ../../secrets/users/susu/home.yaml;
  sops.secrets.github_token = { };
  programs.zsh.initContent = ''
    export GITHUB_TOKEN="$(cat ${config.sops.secrets.github_token.path})"
  '';

  programs.git.settings.user = {
    name = "Susu";
    email = "susu@example.org";
  };
  home.packages = with pkgs; [ python3 ];
}
