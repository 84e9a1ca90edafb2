pub struct ServerConfig;
