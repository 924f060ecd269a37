package loader

// ModelConfig reads a checkpoint's configuration without its weights: a folder's
// config.json (with generation_config.json's defaults), or a GGUF file's metadata. Commands
// size their memory from it before anything large is loaded.
func ModelConfig(path string) (*Config, error) {
	if IsGGUF(path) {
		g, err := OpenGGUFModel(path)
		if err != nil {
			return nil, err
		}
		defer g.Close()
		return g.Config, nil
	}
	return LoadConfigDir(path)
}
