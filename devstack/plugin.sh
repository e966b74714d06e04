#!/bin/bash
# devstack plugin: installs masakarimonitors_iim and runs masakari-iim on each
# compute node, reading the masakari-monitors config file. If masakari-monitors'
# own introspective monitor is enabled too, disable one of them: both would
# notify for the same failures.

function install_masakari_iim {
    setup_develop "$MASAKARI_IIM_DIR"
}

function configure_masakari_iim {
    sudo install -d -o "$STACK_USER" "$(dirname "$MASAKARI_IIM_CONF")" "$MASAKARI_IIM_STATE_DIR"
    [ -f "$MASAKARI_IIM_CONF" ] || touch "$MASAKARI_IIM_CONF"
    iniset "$MASAKARI_IIM_CONF" DEFAULT hostname "$(hostname)"
    iniset "$MASAKARI_IIM_CONF" libvirt connection_uri "qemu:///system"
    iniset "$MASAKARI_IIM_CONF" introspectiveinstancemonitor journal_path \
        "$MASAKARI_IIM_STATE_DIR/iim-journal.sqlite"
    iniset "$MASAKARI_IIM_CONF" introspectiveinstancemonitor notifier "$MASAKARI_IIM_NOTIFIER"
    iniset "$MASAKARI_IIM_CONF" api auth_type password
    iniset "$MASAKARI_IIM_CONF" api auth_url "$KEYSTONE_SERVICE_URI"
    iniset "$MASAKARI_IIM_CONF" api username masakari
    iniset "$MASAKARI_IIM_CONF" api password "$SERVICE_PASSWORD"
    iniset "$MASAKARI_IIM_CONF" api project_name "$SERVICE_PROJECT_NAME"
    iniset "$MASAKARI_IIM_CONF" api user_domain_id default
    iniset "$MASAKARI_IIM_CONF" api project_domain_id default
    iniset "$MASAKARI_IIM_CONF" api region "$REGION_NAME"
}

if is_service_enabled masakari-iim; then
    if [[ "$1" == "stack" && "$2" == "install" ]]; then
        install_masakari_iim
    elif [[ "$1" == "stack" && "$2" == "post-config" ]]; then
        configure_masakari_iim
    elif [[ "$1" == "stack" && "$2" == "extra" ]]; then
        run_process masakari-iim "$(which masakari-iim) --config-file $MASAKARI_IIM_CONF" root root
    fi
    if [[ "$1" == "unstack" ]]; then
        stop_process masakari-iim
    fi
fi
